// The monitoring page: charts of the workers' metrics snapshots (the `metrics` topic, one per
// worker window) and of the gateway's own figures, both over /streams/metrics (Server-Sent Events).
// Charts are uPlot, served by the gateway from the npm package infra/install.sh installs.
"use strict";

const MAX_POINTS = 720;
const STAGES = ["event_to_emit", "recommend_total", "candidates", "features", "scoring", "user_update",
  "item_update", "handover", "gc_pause"];
const QUANTILES = [["p50", "#1a7f37"], ["p95", "#bf8700"], ["p99", "#cf222e"]];
const PALETTE = ["#0969da", "#8250df", "#1a7f37", "#bf8700", "#cf222e", "#1b7c83", "#6e7781"];
const DASHES = [[], [6, 3], [2, 3], [10, 3, 2, 3]];

const monitor = {
  snapshots: [],  // {x, snap} in window order
  gateway: [],    // the gateway's figures over time
  workers: new Map(), // worker_id -> last snapshot
  seen: new Set(),    // worker_id@window_end: a reconnect replays the recent history
  stage: "event_to_emit",
  plots: new Map(),
};
window.monitor = monitor; // read by the browser tests

const $ = (sel) => document.querySelector(sel);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function workerIndex(id) {
  return [...monitor.workers.keys()].sort().indexOf(id);
}

function sum(obj) {
  return Object.values(obj || {}).reduce((a, b) => a + b, 0);
}

function span(snap) {
  return Math.max((Date.parse(snap.window_end) - Date.parse(snap.window_start)) / 1000, 1e-3);
}

// -- chart data ----------------------------------------------------------------------
// Each chart is a list of series {label, stroke, dash, worker, value(snap)}; a snapshot gives a value
// to the series of its own worker and null to the others (lines span the gaps).
function workerSeries(make) {
  const out = [];
  for (const id of [...monitor.workers.keys()].sort()) {
    const n = workerIndex(id);
    out.push(...make(id, n));
  }
  return out;
}

function chartSpecs() {
  const multi = monitor.workers.size > 1;
  const who = (id) => (multi ? ` ${id}` : "");
  return {
    "chart-latency": workerSeries((id, n) => QUANTILES.map(([q, color]) => ({
      label: `${q}${who(id)}`, stroke: color, dash: DASHES[n % DASHES.length], worker: id,
      // a log scale (a cold start's seconds and a warm worker's milliseconds on one chart): no zeros
      value: (s) => (s.latency_ms[monitor.stage] && s.latency_ms[monitor.stage][q] > 0 ? s.latency_ms[monitor.stage][q] : null),
    }))),
    "chart-rate": workerSeries((id, n) => [
      { label: `events/s${who(id)}`, stroke: PALETTE[0], dash: DASHES[n % DASHES.length], worker: id, value: (s) => s.events_per_s },
      { label: `lists/s${who(id)}`, stroke: PALETTE[1], dash: DASHES[n % DASHES.length], worker: id,
        value: (s) => (s.counts.recommendations || 0) / span(s) },
    ]),
    "chart-dlq": workerSeries((id, n) => [
      { label: `dead letters${who(id)}`, stroke: PALETTE[4], dash: DASHES[n % DASHES.length], worker: id, value: (s) => s.dlq_count },
    ]),
    "chart-lag": workerSeries((id, n) => [
      { label: `lag${who(id)}`, stroke: PALETTE[5], dash: DASHES[n % DASHES.length], worker: id, value: (s) => sum(s.lag) },
    ]),
  };
}

function workerData(series) {
  const rows = monitor.snapshots;
  const xs = rows.map((r) => r.x);
  const cols = series.map((s) => rows.map((r) => (r.snap.worker_id === s.worker ? s.value(r.snap) : null)));
  return [xs, ...cols];
}

function cacheData() {
  // hit rate per interval (page loads in it) and since the gateway started
  const g = monitor.gateway;
  const xs = [], interval = [], total = [];
  for (let i = 0; i < g.length; i++) {
    const cur = g[i], prev = g[i - 1];
    xs.push(cur.ts);
    total.push(cur.cache_hit_rate === null ? null : 100 * cur.cache_hit_rate);
    const lookups = prev ? (cur.cache_hits + cur.cache_misses) - (prev.cache_hits + prev.cache_misses) : 0;
    interval.push(prev && lookups > 0 ? (100 * (cur.cache_hits - prev.cache_hits)) / lookups : null);
  }
  return [xs, interval, total];
}

const CACHE_SERIES = [
  { label: "hit rate in the interval %", stroke: PALETTE[2], dash: [], gaps: true }, // null: no page loads then
  { label: "since the gateway started %", stroke: PALETTE[6], dash: [6, 3] },
];
const Y_SCALES = { "chart-latency": { distr: 3 }, "chart-cache": { range: [0, 100] } };

// -- drawing -------------------------------------------------------------------------
function draw(id, series, data) {
  const node = document.getElementById(id);
  node.dataset.points = String(data[0].length);
  node.dataset.series = String(series.length);
  const key = series.map((s) => s.label).join("|") + "@" + node.clientWidth + "@" + monitor.stage;
  const known = monitor.plots.get(id);
  if (known && known.key === key) {
    known.plot.setData(data);
    return;
  }
  if (known) known.plot.destroy();
  const opts = {
    width: Math.max(node.clientWidth, 300),
    height: 220,
    scales: { x: { time: true }, ...(Y_SCALES[id] ? { y: Y_SCALES[id] } : {}) },
    series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.stroke, dash: s.dash, width: 1.5, spanGaps: !s.gaps,
      points: { show: s.gaps || data[0].length < 3 } }))],
    axes: [{}, { size: 56 }],
  };
  monitor.plots.set(id, { key, plot: new uPlot(opts, data, node) });
}

let scheduled = false;
function redraw() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    for (const [id, series] of Object.entries(chartSpecs())) draw(id, series, workerData(series));
    draw("chart-cache", CACHE_SERIES, cacheData());
    renderTables();
  });
}

function renderTables() {
  const rows = [...monitor.workers.values()].sort((a, b) => a.worker_id.localeCompare(b.worker_id)).map((s) => {
    const tr = document.createElement("tr");
    const e2e = s.latency_ms.event_to_emit;
    tr.dataset.worker = s.worker_id;
    tr.append(cell(s.worker_id), cell(s.model_version), cell(s.provider), cell(s.events_per_s.toFixed(1)),
      cell(((s.counts.recommendations || 0) / span(s)).toFixed(1)), cell(String(s.dlq_count), s.dlq_count ? "status-bad" : ""),
      cell(String(sum(s.lag))), cell(e2e ? `${e2e.p50.toFixed(1)} / ${e2e.p99.toFixed(1)}` : "–"),
      cell(new Date(s.window_end).toLocaleTimeString()));
    return tr;
  });
  $("#workers tbody").replaceChildren(...rows);
  const g = monitor.gateway[monitor.gateway.length - 1];
  if (g) {
    const tr = document.createElement("tr");
    tr.append(cell(String(g.clients)), cell(String(g.streams_dropped || 0)),
      cell(g.cache_hit_rate === null ? "no reads yet" : `${(100 * g.cache_hit_rate).toFixed(1)} % of ${g.cache_hits + g.cache_misses}`),
      cell(`${g.events_accepted} (${g.events_rejected} refused)`), cell(String(g.recommendations_in || 0)),
      cell(g.rss_bytes ? `${(g.rss_bytes / 2 ** 20).toFixed(0)} MiB` : "–"));
    $("#gateway tbody").replaceChildren(tr);
  }
}

// -- the stream ----------------------------------------------------------------------
function onSnapshot(snap) {
  const seenKey = `${snap.worker_id}@${snap.window_end}`;
  if (monitor.seen.has(seenKey)) return;
  monitor.seen.add(seenKey);
  const x = Date.parse(snap.window_end) / 1000;
  monitor.workers.set(snap.worker_id, snap);
  const rows = monitor.snapshots;
  rows.push({ x, snap });
  if (rows.length > 1 && rows[rows.length - 2].x > x) rows.sort((a, b) => a.x - b.x);
  if (rows.length > MAX_POINTS) rows.splice(0, rows.length - MAX_POINTS);
  for (const stage of Object.keys(snap.latency_ms)) addStage(stage);
  redraw();
}

function addStage(stage) {
  const select = $("#stage");
  if ([...select.options].some((o) => o.value === stage)) return;
  const option = document.createElement("option");
  option.value = option.textContent = stage;
  const order = (s) => (STAGES.indexOf(s) < 0 ? STAGES.length : STAGES.indexOf(s));
  const after = [...select.options].find((o) => order(o.value) > order(stage));
  select.insertBefore(option, after || null);
  select.value = monitor.stage;
}

function onGateway(stats) {
  monitor.gateway.push(stats);
  if (monitor.gateway.length > MAX_POINTS) monitor.gateway.shift();
  redraw();
}

function connect() {
  const source = new EventSource("/streams/metrics");
  source.addEventListener("open", () => { $("#conn").textContent = "live"; $("#conn").className = "status-ok"; });
  source.addEventListener("error", () => { $("#conn").textContent = "reconnecting…"; $("#conn").className = "status-warn"; });
  source.addEventListener("metrics", (e) => onSnapshot(JSON.parse(e.data)));
  source.addEventListener("gateway", (e) => onGateway(JSON.parse(e.data)));
}

$("#stage").addEventListener("change", (e) => { monitor.stage = e.target.value; redraw(); });
for (const stage of STAGES.slice(0, 1)) addStage(stage);
window.addEventListener("resize", () => { for (const { plot } of monitor.plots.values()) plot.destroy(); monitor.plots.clear(); redraw(); });
connect();
