// Small SVG charts for the dashboards page: no library, no network. Values are set with textContent and
// attributes only, so no data can inject markup.
"use strict";
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f5bd3", "#1f8a4c", "#b7791f", "#c0392b", "#7b3fb5", "#0f7c8c"];

  function svg(width, height) {
    const el = document.createElementNS(NS, "svg");
    el.setAttribute("viewBox", `0 0 ${width} ${height}`);
    el.setAttribute("class", "chart");
    el.setAttribute("role", "img");
    return el;
  }

  function add(parent, tag, attrs, text) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    parent.appendChild(el);
    return el;
  }

  // bars: [{label, value, color?}]; values may be null (drawn as "n/a").
  function bars(items, opts = {}) {
    const width = 460, height = 200, left = 36, bottom = 38, top = 12;
    const max = opts.max ?? Math.max(1e-9, ...items.map((d) => d.value ?? 0));
    const min = Math.min(0, ...items.map((d) => d.value ?? 0));
    const el = svg(width, height);
    const plotH = height - bottom - top;
    const y = (v) => top + plotH * (1 - (v - min) / (max - min || 1));
    add(el, "line", {x1: left, x2: width, y1: y(0), y2: y(0), stroke: "#9aa3b2"});
    [min, max].forEach((v) => add(el, "text", {x: 2, y: y(v) + 4}, v.toFixed(opts.digits ?? 2)));
    const step = (width - left) / Math.max(1, items.length);
    items.forEach((d, i) => {
      const x = left + i * step + step * 0.15, w = step * 0.7;
      if (d.value === null || d.value === undefined) {
        add(el, "text", {x: x + w / 2, y: y(0) - 4, "text-anchor": "middle"}, "n/a");
      } else {
        const y0 = y(Math.max(0, d.value)), y1 = y(Math.min(0, d.value));
        add(el, "rect", {x, y: y0, width: w, height: Math.max(1, y1 - y0), fill: d.color || COLORS[0], rx: 2});
        add(el, "text", {x: x + w / 2, y: y0 - 3, "text-anchor": "middle"}, d.value.toFixed(opts.digits ?? 2));
      }
      add(el, "text", {x: x + w / 2, y: height - bottom + 14, "text-anchor": "middle"}, d.label);
      if (d.sub) add(el, "text", {x: x + w / 2, y: height - bottom + 28, "text-anchor": "middle"}, d.sub);
    });
    return el;
  }

  // series: [{name, points: [{x: label, y: value|null}]}] over one shared ordered set of x labels.
  function lines(series, opts = {}) {
    const width = 460, height = 210, left = 40, bottom = 30, top = 34, right = 34;
    const labels = [...new Set(series.flatMap((s) => s.points.map((p) => p.x)))];
    const values = series.flatMap((s) => s.points.map((p) => p.y)).filter((v) => v !== null && v !== undefined);
    const max = opts.max ?? Math.max(0.1, ...values), min = Math.min(0, ...values);
    const el = svg(width, height);
    const x = (i) => left + (labels.length < 2 ? (width - left - right) / 2 : i * (width - left - right) / (labels.length - 1));
    const y = (v) => top + (height - top - bottom) * (1 - (v - min) / (max - min || 1));
    add(el, "line", {x1: left, x2: width - right, y1: y(0), y2: y(0), stroke: "#9aa3b2"});
    [min, max].forEach((v) => add(el, "text", {x: 2, y: y(v) + 4}, v.toFixed(2)));
    labels.forEach((label, i) => add(el, "text", {x: x(i), y: height - bottom + 14, "text-anchor": "middle"}, label));
    series.forEach((s, k) => {
      const color = s.color || COLORS[k % COLORS.length];
      const pts = s.points.filter((p) => p.y !== null && p.y !== undefined).map((p) => [x(labels.indexOf(p.x)), y(p.y)]);
      if (pts.length > 1) add(el, "polyline", {points: pts.map((p) => p.join(",")).join(" "), fill: "none", stroke: color, "stroke-width": 2});
      pts.forEach(([cx, cy]) => add(el, "circle", {cx, cy, r: 3.5, fill: color}));
      add(el, "text", {x: left, y: 11 + k * 13, fill: color}, "● " + s.name);
    });
    return el;
  }

  return {bars, lines};
})();
