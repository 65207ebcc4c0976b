// The accuracy panel (GET /accuracy, polled) and the sensor chart's look-back over days (GET /history).
// Drift alarms stand out in red; the numbers refresh as the pipeline's scores reach the store.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 5000;
  let newestMs = null; // the data's clock: the newest scored target time

  function fmt(value, digits, suffix) {
    return value === null || value === undefined ? "–" : value.toFixed(digits) + (suffix || "");
  }

  function render(report) {
    newestMs = report.now_ms;
    const body = $("acc-rows");
    body.textContent = "";
    const alarms = new Set(report.alarms.map((a) => a.horizon_min));
    for (const row of report.network) {
      const tr = document.createElement("tr");
      tr.dataset.horizon = row.horizon_min;
      if (alarms.has(row.horizon_min)) tr.className = "alarm";
      for (const text of [`${row.horizon_min} min`, fmt(row.mae, 2, " mph"),
        fmt(row.coverage === null ? null : row.coverage * 100, 1, " %"), String(row.scored), String(row.missing)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    const list = $("acc-alarms");
    list.textContent = "";
    for (const alarm of report.alarms) {
      const li = document.createElement("li");
      li.className = "alarm";
      li.textContent = `DRIFT ${alarm.rule}: ${alarm.message}`;
      list.appendChild(li);
    }
    $("acc-status").textContent = report.now_ms
      ? `last hour to ${new Date(report.now_ms).toISOString().slice(0, 16).replace("T", " ")} UTC`
      : "no scores yet";
    $("accuracy").classList.toggle("has-alarm", report.alarms.length > 0);
  }

  async function poll() {
    try {
      const res = await fetch("../accuracy?window=1h");
      if (res.ok) render(await res.json());
      else $("acc-status").textContent = res.status === 503 ? "store unavailable" : `error ${res.status}`;
    } catch (err) {
      $("acc-status").textContent = "unreachable";
    }
  }

  // The chart's look-back: GET /history for the last N days (of the data's clock), in the chart's shape.
  window.trafficLookback = async function (sid, horizon) {
    const days = Number($("lookback").value);
    if (!days || !newestMs) return null;
    const end = newestMs + 3600 * 1000;
    const start = end - days * 86400 * 1000;
    const res = await fetch(`../history/${encodeURIComponent(sid)}?start_ms=${start}&end_ms=${end}`);
    if (!res.ok) return null;
    const stored = await res.json();
    return {
      sensor_id: sid, horizon_min: horizon,
      actual: stored.actuals.map((a) => ({ time_ms: a.window_start_ms, speed_mph: a.mean_speed_mph })),
      predicted: (stored.predictions[String(horizon)] || []).map((p) => ({
        target_time: p.target_time_ms, event_time: p.event_time_ms, predicted_speed_mph: p.predicted_speed_mph,
        lower_mph: p.lower_mph, upper_mph: p.upper_mph, coverage: p.coverage, congestion: p.congestion,
        model_version: p.model_version })),
    };
  };

  document.addEventListener("DOMContentLoaded", () => {
    poll();
    setInterval(poll, POLL_MS);
  });
})();
