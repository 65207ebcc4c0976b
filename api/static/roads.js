// The road network: each link between two connected sensors (GET /roads) drawn as a road, in two halves,
// each coloured by its end sensor's predicted congestion for the chosen horizon. A grey casing under the
// coloured lines makes them read as roads on the blank (tile-less) map.
(function () {
  "use strict";
  const halves = new Map();  // sensor id -> the half-links that take its colour

  function midpoint(a, b) { return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2]; }

  function init(map, sensors, links) {
    const pane = map.createPane("roads");
    pane.style.zIndex = 350;  // under the sensor markers (overlayPane, 400)
    const at = new Map(sensors.map((s) => [s.sensor_id, [s.latitude, s.longitude]]));
    const casing = [];
    for (const [a, b] of links) {
      if (!at.has(a) || !at.has(b)) continue;
      casing.push([at.get(a), at.get(b)]);
    }
    L.polyline(casing, { pane: "roads", color: "#5f6b73", weight: 9, opacity: 0.55, interactive: false,
      lineCap: "round" }).addTo(map);
    for (const [a, b] of links) {
      if (!at.has(a) || !at.has(b)) continue;
      const mid = midpoint(at.get(a), at.get(b));
      for (const [sid, end] of [[a, at.get(a)], [b, at.get(b)]]) {
        const line = L.polyline([end, mid], { pane: "roads", color: "#b0b0b0", weight: 5, opacity: 0.95,
          interactive: false, lineCap: "butt" }).addTo(map);
        const node = line.getElement();
        node.setAttribute("data-road", a + "-" + b);
        node.setAttribute("data-sensor", sid);
        node.setAttribute("data-congestion", "NONE");
        if (!halves.has(sid)) halves.set(sid, []);
        halves.get(sid).push(line);
      }
    }
  }

  // colour(sid) -> [congestion category, css colour]
  function paint(sid, colour) {
    const [cat, css] = colour(sid);
    for (const line of halves.get(sid) || []) {
      line.setStyle({ color: css });
      line.getElement().setAttribute("data-congestion", cat);
    }
  }

  window.TrafficRoads = { init, paint };
})();
