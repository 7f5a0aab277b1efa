// The inspection page: reads /api/v1 and draws everything itself with SVG.
// No framework and no third-party code, so the page works offline under a strict CSP.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const DEFAULT_POINTS = 720;
  const MIN_VISIBLE_POINTS = 90;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const app = document.getElementById("app");
  const snapshotLabel = document.getElementById("snapshot");
  // Decisions seen while the page is open: the API holds only the latest one.
  const decisionTrail = [];

  // ---- DOM helpers (text only: reasons, errors and queries are never parsed as HTML)

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---- formatting

  function fmt(value, digits = 3) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en");
    const magnitude = Math.abs(value);
    if (magnitude >= 1000) return Math.round(value).toLocaleString("en");
    return Number(value.toPrecision(digits)).toString();
  }

  function fmtPercent(value) {
    return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)} %`;
  }

  function fmtSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 120) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
    if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function fmtTime(unix, withDate) {
    if (unix === null || unix === undefined) return "–";
    const iso = new Date(unix * 1000).toISOString();
    return withDate ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, 19);
  }

  function statusBadge(status) {
    return el("span", { class: `badge status-${status}` }, status);
  }

  // ---- data access

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new Error(body && body.error ? body.error : `HTTP ${response.status}`);
    return body;
  }

  function route() {
    const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    if (parts.length === 4 && parts[0] === "targets") {
      return { view: "target", namespace: parts[1], name: parts[2], digest: parts[3] };
    }
    return { view: "list" };
  }

  // Points asked for with ?points=N, or null to let the chart choose its window.
  function requestedPoints() {
    const requested = Number.parseInt(new URLSearchParams(location.search).get("points") || "", 10);
    return Number.isFinite(requested) && requested > 0 ? Math.min(requested, 20000) : null;
  }

  // By default the history spans five forecast horizons, so the band stays readable.
  function visibleHistory(detail) {
    const history = detail.history;
    const wanted = requestedPoints() || Math.max(MIN_VISIBLE_POINTS, 5 * (detail.forecast ? detail.forecast.horizon_steps : 0));
    const start = Math.max(0, history.timestamps.length - wanted);
    return { timestamps: history.timestamps.slice(start), values: history.values.slice(start) };
  }

  function showSnapshot(data) {
    snapshotLabel.textContent = `snapshot #${data.generation} at ${fmtTime(data.generated_at, true)} UTC`;
  }

  // ---- target list

  function renderList(data) {
    showSnapshot(data);
    const rows = data.targets.map((t) =>
      el(
        "tr",
        { "data-key": t.key },
        el("td", {}, el("a", { href: t.page_url }, t.key)),
        el("td", {}, statusBadge(t.status)),
        el("td", { class: "num", title: `desired ${fmt(t.desired_replicas)}` }, fmt(t.ready_replicas)),
        el("td", { class: "num" }, fmt(t.planned_replicas)),
        el("td", { class: "num" }, fmt(t.reactive_replicas)),
        el("td", { class: "num" }, fmt(t.buffer_replicas)),
        el("td", {}, t.model || "–"),
        el("td", {}, t.mode),
        el("td", { class: "num" }, fmtSeconds(t.data_age_seconds)),
      ),
    );
    const table = el(
      "table",
      { class: "targets", id: "target-table", "data-rendered": String(rows.length) },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ...["target", "status", "ready", "planned", "reactive", "buffer", "model", "mode", "data age"].map((h) =>
            el("th", {}, h),
          ),
        ),
      ),
      el("tbody", {}, ...rows),
    );
    const empty = rows.length === 0 ? el("p", { class: "muted" }, "No targets yet: KEDA registers them on first contact.") : null;
    app.replaceChildren(el("h1", {}, "Targets"), empty || table);
  }

  // ---- chart geometry

  function niceTicks(low, high, count) {
    if (!(high > low)) return [low];
    const rough = (high - low) / count;
    const power = 10 ** Math.floor(Math.log10(rough));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) || rough;
    const ticks = [];
    for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) ticks.push(v);
    return ticks;
  }

  function scale(domain, range) {
    const [d0, d1] = domain;
    const [r0, r1] = range;
    const span = d1 - d0 || 1;
    return (v) => r0 + ((v - d0) / span) * (r1 - r0);
  }

  // Gaps (null values) split a series into segments instead of being drawn as zero;
  // `joinTo(px, py)` is the path command that continues a segment to the next point.
  function segmentsPath(xs, ys, x, y, joinTo) {
    let path = "";
    let pen = false;
    let drawn = 0;
    for (let i = 0; i < xs.length; i += 1) {
      if (ys[i] === null || ys[i] === undefined || xs[i] === null) {
        pen = false;
        continue;
      }
      const px = x(xs[i]).toFixed(1);
      const py = y(ys[i]).toFixed(1);
      path += pen ? joinTo(px, py) : `M${px},${py}`;
      pen = true;
      drawn += 1;
    }
    return { path, drawn };
  }

  function linePath(xs, ys, x, y) {
    return segmentsPath(xs, ys, x, y, (px, py) => `L${px},${py}`);
  }

  // Replica counts hold between observations: draw them as steps, not slopes.
  function stepPath(xs, ys, x, y) {
    return segmentsPath(xs, ys, x, y, (px, py) => `H${px}V${py}`);
  }

  function bandPath(xs, lower, upper, x, y) {
    const top = [];
    const bottom = [];
    for (let i = 0; i < xs.length; i += 1) {
      if (lower[i] === null || upper[i] === null) continue;
      top.push(`${x(xs[i]).toFixed(1)},${y(upper[i]).toFixed(1)}`);
      bottom.push(`${x(xs[i]).toFixed(1)},${y(lower[i]).toFixed(1)}`);
    }
    if (top.length === 0) return "";
    return `M${top.join("L")}L${bottom.reverse().join("L")}Z`;
  }

  function nearestQuantile(forecast, level) {
    let best = forecast.quantiles[0];
    for (const q of forecast.quantiles) {
      if (Math.abs(q.level - level) < Math.abs(best.level - level)) best = q;
    }
    return best;
  }

  function finite(values) {
    return values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  }

  // ---- the target chart: metric on the left axis, replicas on the right

  function drawTargetChart(detail) {
    const width = Math.max(640, Math.min(1200, app.clientWidth || 960));
    const height = 380;
    const margin = { left: 70, right: 60, top: 18, bottom: 40 };
    const history = visibleHistory(detail);
    const forecast = detail.forecast;
    const decision = detail.decision;

    const times = finite([...history.timestamps, ...(forecast ? forecast.timestamps : [])]);
    const metricValues = finite([
      ...history.values,
      ...(forecast ? forecast.quantiles.flatMap((q) => q.values) : []),
    ]);
    const chart = svgEl("svg", {
      id: "target-chart",
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      width: String(width),
      height: String(height),
      role: "img",
      "aria-label": `History and forecast of ${detail.key}`,
    });
    if (times.length === 0 || metricValues.length === 0) {
      chart.append(svgEl("text", { x: width / 2, y: height / 2, class: "empty" }, "No data yet"));
      chart.setAttribute("data-rendered", "0");
      return chart;
    }
    const t0 = Math.min(...times);
    const t1 = Math.max(...times);
    const trail = decisionTrail.filter((d) => d.at >= t0);
    const replicaValues = [
      ...(decision ? [decision.planned_replicas + decision.buffer_replicas, decision.reactive_replicas] : []),
      ...trail.map((d) => d.planned + d.buffer),
      ...trail.map((d) => d.reactive),
    ];
    const replicaMax = Math.max(1, ...replicaValues);
    // For a load metric one replica serves capacity_per_replica, so replicas share the
    // metric's axis: the planned line sits where its capacity is, against the band.
    const perReplica = detail.spec.metric_kind === "load" ? detail.spec.capacity_per_replica : null;
    const low = Math.min(0, ...metricValues);
    const high = Math.max(...metricValues, perReplica ? replicaMax * perReplica : 0) * 1.08 || 1;
    const replicaHigh = perReplica ? high / perReplica : replicaMax * 1.15;

    const x = scale([t0, t1], [margin.left, width - margin.right]);
    const y = scale([low, high], [height - margin.bottom, margin.top]);
    const yr = scale([perReplica ? low / perReplica : 0, replicaHigh], [height - margin.bottom, margin.top]);
    const withDate = t1 - t0 > 86400;

    const grid = svgEl("g", { class: "grid" });
    for (const v of niceTicks(low, high, 6)) {
      grid.append(svgEl("line", { x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v) }));
      grid.append(svgEl("text", { x: margin.left - 8, y: y(v) + 4, class: "tick left" }, fmt(v)));
    }
    for (const v of niceTicks(0, replicaHigh, 5).filter(Number.isInteger)) {
      grid.append(svgEl("text", { x: width - margin.right + 8, y: yr(v) + 4, class: "tick right" }, fmt(v)));
    }
    for (const v of niceTicks(t0, t1, 8)) {
      grid.append(svgEl("line", { x1: x(v), x2: x(v), y1: margin.top, y2: height - margin.bottom, class: "vgrid" }));
      grid.append(svgEl("text", { x: x(v), y: height - margin.bottom + 18, class: "tick bottom" }, fmtTime(v, withDate)));
    }
    grid.append(svgEl("text", { x: 12, y: margin.top - 4, class: "axis-label" }, detail.spec.metric_kind));
    const replicaAxis = perReplica ? `replicas (× ${fmt(perReplica)})` : "replicas";
    grid.append(svgEl("text", { x: width - 12, y: margin.top - 4, class: "axis-label right" }, replicaAxis));
    chart.append(grid);

    let drawn = 0;
    if (forecast) {
      const levels = forecast.quantiles;
      const outer = bandPath(forecast.timestamps, levels[0].values, levels[levels.length - 1].values, x, y);
      chart.append(svgEl("path", { d: outer, class: "band-outer", "data-levels": `${levels[0].level}-${levels[levels.length - 1].level}` }));
      const innerLow = nearestQuantile(forecast, 0.25);
      const innerHigh = nearestQuantile(forecast, 0.75);
      if (innerLow !== innerHigh) {
        chart.append(svgEl("path", { d: bandPath(forecast.timestamps, innerLow.values, innerHigh.values, x, y), class: "band-inner" }));
      }
      const median = linePath(forecast.timestamps, nearestQuantile(forecast, 0.5).values, x, y);
      chart.append(svgEl("path", { d: median.path, class: "line-median" }));
      drawn += median.drawn;
      if (decision) {
        const planning = linePath(forecast.timestamps, nearestQuantile(forecast, decision.quantile_level).values, x, y);
        chart.append(svgEl("path", { d: planning.path, class: "line-quantile" }));
      }
      for (const horizon of forecast.horizons) {
        if (horizon.timestamp > t1) continue;
        const hx = x(horizon.timestamp);
        chart.append(svgEl("line", { x1: hx, x2: hx, y1: margin.top, y2: height - margin.bottom, class: "horizon" }));
        const labelY = margin.top + (horizon.name === "lead" ? 12 : 26);
        chart.append(svgEl("text", { x: hx - 4, y: labelY, class: "horizon-label" }, horizon.name === "lead" ? "pod lead" : "node lead"));
      }
    }
    const actual = linePath(history.timestamps, history.values, x, y);
    chart.append(svgEl("path", { d: actual.path, class: "line-history" }));
    drawn += actual.drawn;

    const now = forecast ? forecast.start - forecast.step_seconds : t1;
    chart.append(svgEl("line", { x1: x(now), x2: x(now), y1: margin.top, y2: height - margin.bottom, class: "now" }));

    // Replica trail recorded on this page, then the current plan held to its horizons.
    if (trail.length > 1) {
      for (const [field, cls] of [["reactive", "replicas-reactive"], ["planned", "replicas-planned"]]) {
        const points = trail.map((d) => `${x(d.at).toFixed(1)},${yr(d[field]).toFixed(1)}`);
        chart.append(svgEl("polyline", { points: points.join(" "), class: `${cls} trail` }));
      }
    }
    if (decision && forecast) {
      const lead = forecast.horizons.find((h) => h.name === "lead");
      const node = forecast.horizons.find((h) => h.name === "node");
      const leadX = x(Math.min(lead.timestamp, t1));
      const nodeX = x(Math.min(node.timestamp, t1));
      const segment = (value, x1, x2, cls) =>
        chart.append(svgEl("line", { x1, x2, y1: yr(value), y2: yr(value), class: cls }));
      segment(decision.reactive_replicas, x(now), leadX, "replicas-reactive");
      segment(decision.planned_replicas, x(now), leadX, "replicas-planned");
      if (decision.buffer_replicas > 0) {
        segment(decision.planned_replicas + decision.buffer_replicas, leadX, nodeX, "replicas-buffer");
      }
      chart.append(svgEl("text", { x: x(now) - 6, y: yr(decision.planned_replicas) + 4, class: "replica-label" }, `planned ${decision.planned_replicas}`));
    }

    addCursor(chart, history, forecast, { x, t0, t1, width, height, margin });
    chart.setAttribute("data-rendered", String(drawn));
    chart.setAttribute("data-history-points", String(actual.drawn));
    chart.setAttribute("data-forecast-steps", String(forecast ? forecast.horizon_steps : 0));
    return chart;
  }

  // A crosshair that reads out the nearest history point or forecast step.
  function addCursor(chart, history, forecast, geometry) {
    const { x, t0, t1, height, margin } = geometry;
    const cursor = svgEl("line", { y1: margin.top, y2: height - margin.bottom, class: "cursor", visibility: "hidden" });
    const label = svgEl("text", { y: margin.top + 28, class: "cursor-label", visibility: "hidden" });
    chart.append(cursor, label);
    chart.addEventListener("mousemove", (event) => {
      const box = chart.getBoundingClientRect();
      const px = ((event.clientX - box.left) / box.width) * geometry.width;
      const t = t0 + ((px - x(t0)) / (x(t1) - x(t0))) * (t1 - t0);
      let text = "";
      let at = t;
      if (forecast && t >= forecast.start - forecast.step_seconds / 2) {
        const i = Math.max(0, Math.min(forecast.horizon_steps - 1, Math.round((t - forecast.start) / forecast.step_seconds)));
        at = forecast.timestamps[i];
        const lo = forecast.quantiles[0];
        const hi = forecast.quantiles[forecast.quantiles.length - 1];
        text = `${fmtTime(at)}  p50 ${fmt(nearestQuantile(forecast, 0.5).values[i])}  [p${Math.round(lo.level * 100)} ${fmt(lo.values[i])} – p${Math.round(hi.level * 100)} ${fmt(hi.values[i])}]`;
      } else if (history.timestamps.length > 0) {
        let i = 0;
        for (let j = 0; j < history.timestamps.length; j += 1) {
          if (Math.abs(history.timestamps[j] - t) < Math.abs(history.timestamps[i] - t)) i = j;
        }
        at = history.timestamps[i];
        text = `${fmtTime(at)}  ${fmt(history.values[i])}`;
      }
      const cx = x(at);
      cursor.setAttribute("x1", cx);
      cursor.setAttribute("x2", cx);
      label.setAttribute("x", Math.min(cx + 6, geometry.width - 330));
      label.textContent = text;
      cursor.setAttribute("visibility", "visible");
      label.setAttribute("visibility", "visible");
    });
    chart.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      label.setAttribute("visibility", "hidden");
    });
  }

  function legend(detail) {
    const items = [
      ["line-history", "demand history (derived)"],
      ["line-median", "forecast median"],
      ["band-inner", "50 % band"],
      ["band-outer", detail.forecast ? `p${Math.round(detail.forecast.levels[0] * 100)}–p${Math.round(detail.forecast.levels[detail.forecast.levels.length - 1] * 100)} band` : "band"],
      ["line-quantile", detail.decision ? `planning quantile p${Math.round(detail.decision.quantile_level * 1000) / 10}` : "planning quantile"],
      ["replicas-planned", "planned replicas"],
      ["replicas-reactive", "reactive replicas"],
      ["replicas-buffer", "planned + buffer"],
    ];
    return el("ul", { class: "legend" }, ...items.map(([cls, text]) => el("li", {}, el("span", { class: `swatch ${cls}` }), text)));
  }

  // ---- panels sharing one time axis: demand beside its raw signals, replicas observed and planned

  const PANEL_HEIGHT = 120;
  const PANEL_GAP = 16;

  function chartWidth() {
    return Math.max(640, Math.min(1200, app.clientWidth || 960));
  }

  // The points of one series at or after t0 (the window the main chart shows).
  function since(timestamps, values, t0) {
    const start = timestamps.findIndex((t) => t !== null && t >= t0);
    if (start < 0) return { timestamps: [], values: [] };
    return { timestamps: timestamps.slice(start), values: values.slice(start) };
  }

  // panels: [{ title, series: [{ name, cls, timestamps, values, step }], marks: [{ value, text, cls }], integer }]
  function drawPanels(id, label, panels, t0, t1) {
    const width = chartWidth();
    const margin = { left: 70, right: 150, top: 8, bottom: 30 };
    const height = margin.top + panels.length * (PANEL_HEIGHT + PANEL_GAP) - PANEL_GAP + margin.bottom;
    const chart = svgEl("svg", {
      id,
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      width: String(width),
      height: String(height),
      role: "img",
      "aria-label": label,
    });
    const x = scale([t0, t1 > t0 ? t1 : t0 + 1], [margin.left, width - margin.right]);
    const withDate = t1 - t0 > 86400;
    let drawn = 0;
    panels.forEach((panel, index) => {
      const top = margin.top + index * (PANEL_HEIGHT + PANEL_GAP);
      const bottom = top + PANEL_HEIGHT;
      const values = finite([...panel.series.flatMap((s) => s.values), ...panel.marks.map((m) => m.value)]);
      const low = Math.min(0, ...values);
      const high = Math.max(...values, panel.integer ? 1 : 0) * 1.12 || 1;
      const y = scale([low, high], [bottom, top + 16]);
      const grid = svgEl("g", { class: "grid" });
      grid.append(svgEl("rect", { x: margin.left, y: top, width: width - margin.left - margin.right, height: PANEL_HEIGHT, class: "panel" }));
      for (const v of niceTicks(low, high, 3).filter((tick) => !panel.integer || Number.isInteger(tick))) {
        grid.append(svgEl("line", { x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v) }));
        grid.append(svgEl("text", { x: margin.left - 8, y: y(v) + 4, class: "tick left" }, fmt(v)));
      }
      grid.append(svgEl("text", { x: margin.left + 6, y: top + 12, class: "panel-title" }, panel.title));
      chart.append(grid);
      for (const series of panel.series) {
        const line = (series.step ? stepPath : linePath)(series.timestamps, series.values, x, y);
        chart.append(svgEl("path", { d: line.path, class: series.cls, "data-series": series.name, "data-points": String(line.drawn) }));
        drawn += line.drawn;
      }
      // The newest values, labelled beside the right edge where the lines end; marks of
      // one value share a label ("planned 11 · ready 11") instead of printing over each other.
      const right = width - margin.right;
      const labels = new Map();
      for (const mark of panel.marks) {
        chart.append(svgEl("line", { x1: right, x2: right + 12, y1: y(mark.value), y2: y(mark.value), class: mark.cls }));
        labels.set(mark.value, [...(labels.get(mark.value) || []), mark.text]);
      }
      for (const [value, texts] of labels) {
        chart.append(svgEl("text", { x: right + 16, y: y(value) + 4, class: "mark-label" }, texts.join(" · ")));
      }
    });
    const axis = svgEl("g", { class: "grid" });
    for (const v of niceTicks(t0, t1, 8)) {
      axis.append(svgEl("text", { x: x(v), y: height - margin.bottom + 18, class: "tick bottom" }, fmtTime(v, withDate)));
    }
    chart.append(axis);
    chart.setAttribute("data-rendered", String(drawn));
    chart.setAttribute("data-panels", String(panels.length));
    return chart;
  }

  function shownWindow(detail) {
    const times = finite(visibleHistory(detail).timestamps);
    return times.length ? [Math.min(...times), Math.max(...times)] : null;
  }

  function demandPanels(detail, t0) {
    const demand = detail.demand;
    const derivation = demand.derivation;
    const history = since(detail.history.timestamps, detail.history.values, t0);
    const main = {
      title: `offered demand (${demand.unit}), derived`,
      series: [{ name: "demand", cls: "line-history", ...history }],
      marks: [],
    };
    if (derivation && derivation.value !== null) {
      const bound = derivation.lower_bound ? "≥ " : "";
      main.marks.push({ value: derivation.value, text: `${bound}${fmt(derivation.value)}`, cls: "line-history" });
    }
    const raw = demand.signals.map((signal) => {
      const shown = since(signal.timestamps, signal.values, t0);
      // A raw signal in demand's own unit is also drawn over it, so the derivation shows as the gap.
      if (signal.unit === demand.unit) {
        main.series.push({ name: `${signal.kind} (raw)`, cls: "line-raw", ...shown });
      }
      return {
        title: `${signal.kind} (${signal.unit}), raw`,
        series: [{ name: signal.kind, cls: "line-raw", ...shown }],
        marks: [],
      };
    });
    return [main, ...raw];
  }

  function drawDemandChart(detail) {
    const span = shownWindow(detail);
    if (span === null) return emptyChart("demand-chart", "No demand derived yet");
    const kinds = detail.demand.signals.map((s) => s.kind).join(",");
    const chart = drawPanels("demand-chart", `Derived demand and raw signals of ${detail.key}`, demandPanels(detail, span[0]), ...span);
    chart.setAttribute("data-signals", kinds);
    return chart;
  }

  function drawReplicaChart(detail) {
    const span = shownWindow(detail);
    const replicas = detail.replicas;
    if (span === null || replicas.history === null) {
      return emptyChart("replica-chart", `No replica counts observed yet (replicaSource ${replicas.source})`);
    }
    const [t0, t1] = span;
    const history = replicas.history;
    const ready = since(history.timestamps, history.ready, t0);
    const desired = since(history.timestamps, history.desired, t0);
    const trail = decisionTrail.filter((d) => d.at >= t0);
    const series = [
      { name: "ready", cls: "replicas-ready", step: true, ...ready },
      { name: "desired", cls: "replicas-desired", step: true, ...desired },
    ];
    if (trail.length > 1) {
      const at = trail.map((d) => d.at);
      series.push({ name: "planned", cls: "replicas-planned trail", step: true, timestamps: at, values: trail.map((d) => d.planned) });
      series.push({ name: "reactive", cls: "replicas-reactive trail", step: true, timestamps: at, values: trail.map((d) => d.reactive) });
    }
    const marks = [];
    if (replicas.planned !== null) marks.push({ value: replicas.planned, text: `planned ${replicas.planned}`, cls: "replicas-planned" });
    if (replicas.reactive !== null) marks.push({ value: replicas.reactive, text: `reactive ${replicas.reactive}`, cls: "replicas-reactive" });
    if (replicas.ready !== null) marks.push({ value: replicas.ready, text: `ready ${replicas.ready}`, cls: "replicas-ready" });
    const panel = { title: `replicas: observed (replicaSource ${replicas.source}) and planned`, series, marks, integer: true };
    const chart = drawPanels("replica-chart", `Observed and planned replicas of ${detail.key}`, [panel], Math.min(t0, ...trail.map((d) => d.at)), Math.max(t1, ...trail.map((d) => d.at)));
    chart.setAttribute("data-ready-points", String(ready.values.filter((v) => v !== null).length));
    chart.setAttribute("data-desired-points", String(desired.values.filter((v) => v !== null).length));
    chart.setAttribute("data-planned", String(replicas.planned));
    return chart;
  }

  function emptyChart(id, message) {
    const width = chartWidth();
    const chart = svgEl("svg", { id, class: "chart", viewBox: `0 0 ${width} 60`, width: String(width), height: "60", role: "img", "aria-label": message });
    chart.append(svgEl("text", { x: width / 2, y: 34, class: "empty" }, message));
    chart.setAttribute("data-rendered", "0");
    return chart;
  }

  function swatches(items) {
    return el("ul", { class: "legend" }, ...items.map(([cls, text]) => el("li", {}, el("span", { class: `swatch ${cls}` }), text)));
  }

  function derivationText(detail) {
    const derivation = detail.demand.derivation;
    if (!derivation) return "Demand not derived yet.";
    const bound = derivation.lower_bound ? " — a lower bound: demand may be higher than shown" : "";
    return `Newest step: ${derivation.description}${bound}.`;
  }

  // ---- target detail

  function card(label, value, title) {
    return el("div", { class: "card", title }, el("div", { class: "card-label" }, label), el("div", { class: "card-value" }, value));
  }

  function renderTarget(detail) {
    showSnapshot(detail);
    const decision = detail.decision;
    if (decision) {
      const last = decisionTrail[decisionTrail.length - 1];
      if (!last || last.at !== detail.generated_at) {
        decisionTrail.push({ at: detail.generated_at, planned: decision.planned_replicas, reactive: decision.reactive_replicas, buffer: decision.buffer_replicas });
      }
    }
    const selection = detail.model_selection;
    const cards = el(
      "div",
      { class: "cards" },
      card("planned", fmt(decision && decision.planned_replicas)),
      card("ready", fmt(detail.replicas.ready), `observed (replicaSource ${detail.replicas.source})`),
      card("desired", fmt(detail.replicas.desired), "observed on the scale target"),
      card("reactive", fmt(decision && decision.reactive_replicas)),
      card("buffer", fmt(decision && decision.buffer_replicas)),
      card("quantile", decision ? `p${fmt(decision.quantile_level * 100)}` : "–"),
      card("model", selection.chosen || "–", `configured: ${selection.configured}`),
      card("MASE", fmt(detail.forecast_error_mase)),
      card("coverage", `${fmtPercent(detail.coverage.achieved)} / ${fmtPercent(detail.coverage.target)}`, "achieved / target"),
      card("data age", fmtSeconds(detail.freshness.age_seconds), `stale after ${fmtSeconds(detail.freshness.stale_after_seconds)}`),
    );
    const reason = el("p", { class: "reason", id: "reason" }, decision ? decision.reason : "No decision yet.");
    const error = detail.last_error ? el("p", { class: "error", id: "last-error" }, `Last error: ${detail.last_error}`) : null;
    const candidates = el(
      "table",
      { class: "scores" },
      el("thead", {}, el("tr", {}, ...["model", "MASE", "pinball", "coverage", ""].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        ...selection.candidates.map((s) =>
          el(
            "tr",
            { class: s.model === selection.chosen ? "chosen" : null },
            el("td", {}, s.model),
            el("td", { class: "num" }, fmt(s.mase)),
            el("td", { class: "num" }, fmt(s.pinball)),
            el("td", { class: "num" }, fmtPercent(s.coverage)),
            el("td", {}, s.failed ? `failed: ${s.failed}` : s.model === selection.chosen ? "chosen" : ""),
          ),
        ),
      ),
    );
    const spec = detail.spec;
    const facts = el(
      "dl",
      { class: "facts" },
      ...[
        ["query", spec.query],
        ["metric", `${detail.metric_name} (${spec.metric_kind}, ${fmt(spec.capacity_per_replica)} per replica)`],
        ["lead time", `${fmtSeconds(spec.lead_time_seconds)} pods, +${fmtSeconds(spec.node_lead_time_seconds)} nodes`],
        ["step", fmtSeconds(spec.step_seconds)],
        ["replicas", `${spec.min_replicas}–${spec.max_replicas}, mode ${spec.mode}`],
        ["last sample", `${fmtTime(detail.freshness.last_sample_at, true)} UTC`],
        ["durations", `fit ${fmtSeconds(detail.durations.last_fit_seconds)}, update ${fmtSeconds(detail.durations.last_update_seconds)}`],
      ].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
    );
    const sections = [
      el("p", { class: "crumbs" }, el("a", { href: "/" }, "Targets"), " / ", `${detail.namespace}/${detail.name}`),
      el("h1", {}, detail.key, " ", statusBadge(detail.status)),
      cards,
      reason,
      error,
      el("div", { class: "chart-box" }, drawTargetChart(detail)),
      legend(detail),
      el("h2", {}, "Demand and the raw signals it is derived from"),
      el("p", { id: "derivation", class: detail.demand.derivation && detail.demand.derivation.lower_bound ? "derivation lower-bound" : "derivation" }, derivationText(detail)),
      el("div", { class: "chart-box" }, drawDemandChart(detail)),
      swatches([["line-history", "offered demand (derived; what the model forecasts)"], ["line-raw", "raw signal as scraped"]]),
      el("h2", {}, "Replicas: observed and planned"),
      el("div", { class: "chart-box" }, drawReplicaChart(detail)),
      swatches([
        ["replicas-ready", "ready (observed)"],
        ["replicas-desired", "desired (observed)"],
        ["replicas-planned", "planned"],
        ["replicas-reactive", "reactive"],
      ]),
      el("p", { class: "caption", id: "replica-reason" }, decision ? `Planned ${decision.planned_replicas}: ${decision.reason}` : "No decision yet."),
      el("h2", {}, "Model selection"),
      candidates,
      el("h2", {}, "Target"),
      facts,
    ];
    // replaceChildren would print a null as the text "null".
    app.replaceChildren(...sections.filter((section) => section !== null));
  }

  function renderError(message) {
    app.replaceChildren(el("p", { class: "crumbs" }, el("a", { href: "/" }, "Targets")), el("p", { class: "error", id: "load-error" }, message));
  }

  async function refresh() {
    const where = route();
    try {
      if (where.view === "target") {
        const path = [where.namespace, where.name, where.digest].map(encodeURIComponent).join("/");
        renderTarget(await getJson(`/api/v1/targets/${path}?points=${requestedPoints() || DEFAULT_POINTS}`));
      } else {
        renderList(await getJson("/api/v1/targets"));
      }
      app.setAttribute("data-state", "ready");
    } catch (err) {
      renderError(`Could not load: ${err.message}`);
      app.setAttribute("data-state", "error");
    }
  }

  async function loop() {
    await refresh();
    setTimeout(loop, REFRESH_MS);
  }

  loop();
})();
