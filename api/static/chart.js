// A small hand-drawn SVG chart: actual speed (line), forecast (line) with its interval (band).
// window.drawSpeedChart(container, history, colour) where history is GET /sensors/{id}/history.
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const W = 360, H = 220, PAD = { l: 34, r: 8, t: 10, b: 24 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function hhmm(ms) {
    const d = new Date(ms);
    return String(d.getUTCHours()).padStart(2, "0") + ":" + String(d.getUTCMinutes()).padStart(2, "0");
  }

  window.drawSpeedChart = function (container, history, colour) {
    container.textContent = "";
    const actual = history.actual.filter((p) => p.speed_mph !== null);
    const predicted = history.predicted;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-points-actual": actual.length,
      "data-points-predicted": predicted.length }, container);
    if (!actual.length && !predicted.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, svg).textContent = "no data for this sensor yet";
      return svg;
    }
    const times = actual.map((p) => p.time_ms).concat(predicted.map((p) => p.target_time));
    const speeds = actual.map((p) => p.speed_mph)
      .concat(predicted.flatMap((p) => [p.lower_mph, p.upper_mph]));
    let t0 = Math.min(...times), t1 = Math.max(...times);
    if (t1 === t0) { t0 -= 300000; t1 += 300000; }
    const lo = Math.max(0, Math.floor(Math.min(...speeds) / 10) * 10);
    const hi = Math.max(lo + 10, Math.ceil(Math.max(...speeds) / 10) * 10);
    const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
    const y = (v) => H - PAD.b - ((v - lo) / (hi - lo)) * (H - PAD.t - PAD.b);

    for (let v = lo; v <= hi; v += 10) {
      el("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), stroke: "#eee" }, svg);
      el("text", { x: PAD.l - 4, y: y(v) + 3, "text-anchor": "end" }, svg).textContent = v;
    }
    el("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b }, svg);
    for (let i = 0; i <= 4; i++) {
      const t = t0 + ((t1 - t0) * i) / 4;
      el("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, svg).textContent = hhmm(t);
    }
    el("text", { x: 4, y: PAD.t + 2, transform: `rotate(90 4 ${PAD.t + 2})` }, svg).textContent = "mph";

    if (predicted.length) {
      const upper = predicted.map((p) => `${x(p.target_time)},${y(p.upper_mph)}`);
      const lower = predicted.slice().reverse().map((p) => `${x(p.target_time)},${y(p.lower_mph)}`);
      el("polygon", { class: "interval", points: upper.concat(lower).join(" "), fill: colour, "fill-opacity": 0.18,
        stroke: "none" }, svg);
      el("polyline", { class: "predicted", points: predicted.map((p) => `${x(p.target_time)},${y(p.predicted_speed_mph)}`)
        .join(" "), fill: "none", stroke: colour, "stroke-width": 2 }, svg);
      if (predicted.length === 1) {
        el("circle", { cx: x(predicted[0].target_time), cy: y(predicted[0].predicted_speed_mph), r: 3, fill: colour }, svg);
      }
    }
    if (actual.length) {
      el("polyline", { class: "actual", points: actual.map((p) => `${x(p.time_ms)},${y(p.speed_mph)}`).join(" "),
        fill: "none", stroke: "#222", "stroke-width": 1.5 }, svg);
    }
    return svg;
  };
})();
