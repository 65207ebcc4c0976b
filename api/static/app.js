// The live map: sensors and the roads between them coloured by predicted congestion, and the incidents panel,
// fed by GET /stream (Server-Sent Events). Roads: roads.js; incidents: incidents.js.
(function () {
  "use strict";
  const COLOURS = { FREE_FLOW: "#1a9850", MODERATE: "#fdae61", HEAVY: "#f46d43", SEVERE: "#a50026",
    UNKNOWN: "#607d8b", NONE: "#b0b0b0" };
  const LABELS = { FREE_FLOW: "free flow", MODERATE: "moderate", HEAVY: "heavy", SEVERE: "severe",
    UNKNOWN: "unknown", NONE: "no forecast" };
  const $ = (id) => document.getElementById(id);

  const state = {
    horizon: 15, sensors: new Map(), latest: new Map(), readings: new Map(),
    markers: new Map(), dirty: new Set(), events: 0, selected: null, source: null, retryMs: 1000,
  };
  const key = (sid, h) => sid + "/" + h;

  function setStatus(kind, text) {
    const node = $("status");
    node.className = "status " + kind;
    node.textContent = text || kind;
  }

  function categoryOf(sid) {
    const p = state.latest.get(key(sid, state.horizon));
    return p ? p.congestion : "NONE";
  }

  function paint(sid) {
    const marker = state.markers.get(sid);
    if (!marker) return;
    const cat = categoryOf(sid);
    const selected = sid === state.selected;
    marker.setStyle({ fillColor: COLOURS[cat], color: selected ? "#0d47a1" : cat === "NONE" ? "#888" : "#333",
      weight: selected ? 3 : 1, radius: selected ? 9 : 5 });
    const node = marker.getElement();
    if (node) node.setAttribute("data-congestion", cat);
    window.TrafficRoads.paint(sid, () => [cat, COLOURS[cat]]);
  }

  let frame = 0;
  function schedule(sid) {
    if (sid) state.dirty.add(sid);
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      for (const sid of state.dirty) paint(sid);
      state.dirty.clear();
      renderAnalytics();
    });
  }

  function repaintAll() { for (const sid of state.markers.keys()) state.dirty.add(sid); schedule(); }

  function renderAnalytics() {
    const counts = { FREE_FLOW: 0, MODERATE: 0, HEAVY: 0, SEVERE: 0, UNKNOWN: 0 };
    let sum = 0, n = 0, newest = 0;
    for (const sid of state.sensors.keys()) {
      const p = state.latest.get(key(sid, state.horizon));
      if (!p) continue;
      counts[p.congestion] = (counts[p.congestion] || 0) + 1;
      sum += p.predicted_speed_mph; n += 1; newest = Math.max(newest, p.event_time);
    }
    let asum = 0, an = 0;
    for (const r of state.readings.values()) if (r.speed_mph !== null) { asum += r.speed_mph; an += 1; }
    $("a-count").textContent = `${n} / ${state.sensors.size}`;
    $("a-pred").textContent = n ? (sum / n).toFixed(1) + " mph" : "–";
    $("a-actual").textContent = an ? (asum / an).toFixed(1) + " mph" : "–";
    $("a-events").textContent = state.events.toLocaleString();
    $("as-of").textContent = newest ? "forecast from " + new Date(newest).toISOString().slice(0, 16).replace("T", " ")
      + " (data time)" : "no predictions yet";
    const bar = $("breakdown");
    bar.textContent = "";
    for (const [cat, count] of Object.entries(counts)) {
      if (!count) continue;
      const seg = document.createElement("div");
      seg.style.width = (100 * count) / n + "%";
      seg.style.background = COLOURS[cat];
      seg.title = `${LABELS[cat]}: ${count}`;
      seg.dataset.congestion = cat;
      seg.dataset.count = count;
      bar.appendChild(seg);
    }
    for (const [cat, count] of Object.entries({ ...counts, NONE: state.sensors.size - n })) {
      const li = document.querySelector(`#legend li[data-congestion="${cat}"] b`);
      if (li) li.textContent = count;
    }
  }

  function applyPrediction(p) {
    const k = key(p.sensor_id, p.horizon_min);
    const cur = state.latest.get(k);
    if (!cur || p.event_time >= cur.event_time) state.latest.set(k, p);
    if (p.horizon_min === state.horizon) schedule(p.sensor_id);
    if (p.sensor_id === state.selected) refreshDetail();
  }

  function applyReading(r) {
    const cur = state.readings.get(r.sensor_id);
    if (!cur || r.time_ms >= cur.time_ms) state.readings.set(r.sensor_id, r);
    if (r.sensor_id === state.selected) refreshDetail();
    schedule();
  }

  // -- the sensor chart --------------------------------------------------------------------------------------
  let detailTimer = 0;
  function refreshDetail() {
    if (detailTimer) return;
    detailTimer = setTimeout(() => { detailTimer = 0; loadDetail(); }, 1000);
  }

  async function loadDetail() {
    const sid = state.selected;
    if (!sid) return;
    const stored = window.trafficLookback ? await window.trafficLookback(sid, state.horizon) : null;
    const res = stored ? null : await fetch(`../sensors/${encodeURIComponent(sid)}/history?horizon=${state.horizon}`);
    if ((res && !res.ok) || sid !== state.selected) return;
    const history = stored || await res.json();
    const cat = categoryOf(sid);
    const p = state.latest.get(key(sid, state.horizon));
    const r = state.readings.get(sid);
    $("d-summary").textContent = (p ? `+${state.horizon} min: ${p.predicted_speed_mph.toFixed(1)} mph `
      + `[${p.lower_mph.toFixed(1)}, ${p.upper_mph.toFixed(1)}] · ${LABELS[cat]} · model ${p.model_version}`
      : "no forecast yet") + (r && r.speed_mph !== null ? ` · latest actual ${r.speed_mph.toFixed(1)} mph` : "");
    window.drawSpeedChart($("chart"), history, COLOURS[cat === "NONE" ? "UNKNOWN" : cat]);
  }

  function select(sid, pan) {
    const previous = state.selected;
    state.selected = sid;
    if (previous) schedule(previous);
    schedule(sid);
    $("detail").hidden = false;
    $("d-id").textContent = sid;
    const s = state.sensors.get(sid);
    if (s && pan) state.map.panTo([s.latitude, s.longitude]);
    loadDetail();
  }

  // -- the stream ---------------------------------------------------------------------------------------------
  function expand(e, apply) {  // a column frame -> its records, applied in order; returns how many
    const frame = JSON.parse(e.data);
    const cols = Object.entries(frame.cols);
    for (let i = 0; i < frame.n; i++) {
      const record = { ...frame.const, received_ms: frame.received_ms };
      for (const [name, values] of cols) record[name] = values[i];
      apply(record);
    }
    return frame.n;
  }

  function connect() {
    setStatus(state.events ? "reconnecting" : "connecting");
    // Per-prediction alerts stay on /alerts and the stream; the dashboard lists incidents instead.
    // batch=true: a step's predictions come as one `predictions` event in columns (api/frames.py).
    const source = new EventSource("../stream?types=prediction&types=reading&types=incident&batch=true");
    state.source = source;
    source.onopen = () => { setStatus("live"); state.retryMs = 1000; };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {  // the browser gave up: retry ourselves, with backoff
        setStatus("offline", `offline · retry in ${Math.round(state.retryMs / 1000)} s`);
        setTimeout(connect, state.retryMs);
        state.retryMs = Math.min(state.retryMs * 2, 30000);
      } else {
        setStatus("reconnecting");  // EventSource retries by itself, sending Last-Event-ID
      }
    };
    source.addEventListener("snapshot", (e) => {
      const snap = JSON.parse(e.data);
      state.latest.clear(); state.readings.clear();
      snap.predictions.forEach(applyPrediction);
      snap.readings.forEach(applyReading);
      window.TrafficIncidents.snapshot(snap.incidents || []);
      repaintAll();
    });
    source.addEventListener("prediction", (e) => { state.events += 1; applyPrediction(JSON.parse(e.data)); });
    source.addEventListener("predictions", (e) => { state.events += expand(e, applyPrediction); });
    source.addEventListener("readings", (e) => { state.events += expand(e, applyReading); });
    source.addEventListener("reading", (e) => { state.events += 1; applyReading(JSON.parse(e.data)); });
    source.addEventListener("incident", (e) => { state.events += 1; window.TrafficIncidents.apply(JSON.parse(e.data)); });
    source.addEventListener("lagged", () => setStatus("reconnecting", "catching up"));
    source.addEventListener("bye", () => setStatus("reconnecting", "server restarting"));
  }

  async function start() {
    const config = await (await fetch("config.json")).json();
    document.title = `${config.title} · live map`;
    document.getElementById("title").textContent = config.title;
    const map = L.map("map", { zoomControl: true, zoomSnap: 0.25, attributionControl: !!config.tile_url });
    state.map = map;
    if (config.tile_url) L.tileLayer(config.tile_url, { attribution: config.tile_attribution, maxZoom: 18 }).addTo(map);
    const sensors = await (await fetch("../sensors")).json();
    map.fitBounds(sensors.map((s) => [s.latitude, s.longitude]), { padding: [20, 20] });
    const roads = await (await fetch("../roads")).json();
    window.TrafficRoads.init(map, sensors, roads.links);
    for (const s of sensors) {
      state.sensors.set(s.sensor_id, s);
      for (const p of Object.values(s.latest_predictions)) applyPrediction(p);
      if (s.latest_reading) state.readings.set(s.sensor_id, s.latest_reading);
      const marker = L.circleMarker([s.latitude, s.longitude], { radius: 5, weight: 1, fillOpacity: 0.9,
        fillColor: COLOURS.NONE, color: "#888" }).addTo(map);
      marker.bindTooltip(() => {
        const p = state.latest.get(key(s.sensor_id, state.horizon));
        return `${s.sensor_id}: ` + (p ? `${p.predicted_speed_mph.toFixed(1)} mph (${LABELS[p.congestion]})` : "no forecast");
      });
      marker.on("click", () => select(s.sensor_id, false));
      marker.getElement().setAttribute("data-sensor-id", s.sensor_id);
      state.markers.set(s.sensor_id, marker);
    }
    window.TrafficIncidents.init(map, state.sensors);
    const legend = $("legend");
    for (const cat of ["FREE_FLOW", "MODERATE", "HEAVY", "SEVERE", "UNKNOWN", "NONE"]) {
      const li = document.createElement("li");
      li.dataset.congestion = cat;
      li.innerHTML = `<i style="background:${COLOURS[cat]}"></i>${LABELS[cat]} <b></b>`;
      legend.appendChild(li);
    }
    $("horizon").onchange = (e) => { state.horizon = Number(e.target.value); repaintAll(); loadDetail(); };
    $("lookback").onchange = () => loadDetail();
    $("d-close").onclick = () => {
      const previous = state.selected;
      state.selected = null;
      $("detail").hidden = true;
      if (previous) schedule(previous);
    };
    repaintAll();
    connect();
  }

  start().catch((err) => { setStatus("offline", "failed to start: " + err.message); console.error(err); });
})();
