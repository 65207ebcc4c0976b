// The incidents panel: open incidents first (with duration and trend), then the recently closed ones.
// Fed by the `incident` SSE events (one per incident per step: OPENED, UPDATED, CLOSED) and the snapshot.
// A click zooms the map to the incident's sensors and rings them.
(function () {
  "use strict";
  const ORDER = { OPEN: 0, CLEARING: 1, CLOSED: 2 };
  const SEVERITY = { SEVERE: 0, HEAVY: 1, MODERATE: 2 };
  const TREND = { WORSENING: "▼ worsening", STABLE: "▶ stable", IMPROVING: "▲ improving" };
  const MAX_CLOSED = 20;
  const incidents = new Map();
  let ctx = null, ring = null, selected = null;

  const hhmm = (ms) => new Date(ms).toISOString().slice(11, 16);
  function duration(inc) {
    const end = inc.closed_at || inc.updated_at;
    const min = Math.round((end - inc.opened_at) / 60000);
    return min >= 60 ? `${Math.floor(min / 60)} h ${min % 60} min` : `${min} min`;
  }

  function render() {
    const list = document.getElementById("incidents");
    // open first; among open ones the most severe and widest first; closed ones newest first
    const rows = [...incidents.values()].sort((a, b) => (ORDER[a.state] - ORDER[b.state])
      || (a.state === "CLOSED" ? 0 : (SEVERITY[a.severity] - SEVERITY[b.severity])
        || (b.sensor_ids.length - a.sensor_ids.length))
      || (b.updated_at - a.updated_at) || a.incident_id.localeCompare(b.incident_id));
    const open = rows.filter((r) => r.state !== "CLOSED");
    const closed = rows.filter((r) => r.state === "CLOSED").slice(0, MAX_CLOSED);
    list.textContent = "";
    for (const inc of [...open, ...closed]) {
      const li = document.createElement("li");
      li.className = `${inc.state} ${inc.severity}` + (inc.incident_id === selected ? " selected" : "");
      li.dataset.incidentId = inc.incident_id;
      li.dataset.state = inc.state;
      li.dataset.event = inc.event;
      li.dataset.sensors = inc.sensor_ids.length;
      const worst = inc.worst_speed_mph === null ? "–" : inc.worst_speed_mph.toFixed(0) + " mph";
      const clears = inc.expected_clearance_time ? ` · clears ~${hhmm(inc.expected_clearance_time)}` : "";
      const head = document.createElement("b");
      head.textContent = `${inc.severity} · ${inc.state.toLowerCase()}`;
      const body = document.createElement("span");
      body.textContent = ` · ${inc.sensor_ids.length} sensor${inc.sensor_ids.length > 1 ? "s" : ""} near `
        + `${inc.seed_sensor_id} · since ${hhmm(inc.opened_at)} (${duration(inc)}) · worst ${worst}`
        + (inc.state === "CLOSED" ? ` · closed ${hhmm(inc.closed_at)}` : ` · ${TREND[inc.trend]}${clears}`);
      li.append(head, body);
      li.title = inc.incident_id;
      li.onclick = () => zoomTo(inc.incident_id);
      list.appendChild(li);
    }
    document.getElementById("incidents-count").textContent = `(${open.length} open)`;
  }

  function zoomTo(id) {
    const inc = incidents.get(id);
    if (!inc || !ctx) return;
    selected = id;
    const points = inc.sensor_ids.map((sid) => ctx.sensors.get(sid)).filter(Boolean)
      .map((s) => [s.latitude, s.longitude]);
    if (ring) ring.remove();
    ring = L.featureGroup(points.map((p) => L.circleMarker(p, { radius: 11, color: "#0d47a1", weight: 3,
      fill: false, interactive: false, className: "incident-ring" }))).addTo(ctx.map);
    if (points.length) ctx.map.fitBounds(L.latLngBounds(points).pad(0.6), { maxZoom: 14 });
    document.getElementById("map").dataset.zoomedIncident = id;
    render();
  }

  let pending = 0;
  function apply(inc) {
    const cur = incidents.get(inc.incident_id);
    if (cur && cur.updated_at > inc.updated_at) return;
    incidents.set(inc.incident_id, inc);
    const closed = [...incidents.values()].filter((r) => r.state === "CLOSED")
      .sort((a, b) => b.updated_at - a.updated_at);
    for (const old of closed.slice(MAX_CLOSED)) incidents.delete(old.incident_id);
    if (!pending) pending = requestAnimationFrame(() => { pending = 0; render(); });
  }

  function snapshot(list) { incidents.clear(); list.forEach(apply); }
  function init(map, sensors) {
    ctx = { map, sensors };
    const node = document.getElementById("map");
    node.dataset.zoom = map.getZoom();
    map.on("zoomend", () => { node.dataset.zoom = map.getZoom(); });
    render();
  }

  window.TrafficIncidents = { init, apply, snapshot, zoomTo };
})();
