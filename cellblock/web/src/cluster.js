// The cluster dashboard, polled every POLL_MS while the view is open:
//   - workers and backlog per queue from GET /v1/workers, and a chart of busy slots and waiting jobs;
//   - jobs per second and mean latency (queue wait + run) from GET /metrics, the API's Prometheus counters:
//     the rate is the change of cellblock_jobs_total between two polls, the latency the change of the
//     histograms' _sum over the change of their _count. Without /metrics that chart says so and stays empty.
import { call, callText } from "./api.js";
import { $, ago, el } from "./dom.js";

const POLL_MS = 2000;
const SAMPLES = 90;
const slotSamples = [];
const rateSamples = [];
let previous = null; // the last /metrics totals, for rates
let timer = null;

export function start() {
  if (timer === null) {
    poll();
    timer = setInterval(poll, POLL_MS);
  }
}

export function stop() {
  clearInterval(timer);
  timer = null;
  previous = null;
}

function push(list, sample) {
  list.push(sample);
  if (list.length > SAMPLES) list.shift();
}

async function poll() {
  await Promise.all([pollWorkers(), pollMetrics()]);
}

async function pollWorkers() {
  const box = $("#cluster-error");
  let status;
  try {
    status = await call("GET", "/v1/workers");
  } catch (e) {
    box.textContent = e.message;
    box.hidden = false;
    return;
  }
  box.hidden = true;
  renderWorkers(status.workers);
  renderBacklog(status.backlog);
  const busy = status.workers.reduce((n, w) => n + w.busy, 0);
  const slots = status.workers.reduce((n, w) => n + w.slots, 0);
  const waiting = Object.values(status.backlog).reduce((n, v) => n + v, 0);
  push(slotSamples, { slots, busy, waiting });
  drawChart($("#chart"), slotSamples, [
    ["slots", "--muted", "slots"],
    ["busy", "--accent", "busy"],
    ["waiting", "--bad", "waiting"],
  ]);
}

// Sum of every sample of each named series in a Prometheus text exposition (all label sets together).
export function totals(text, names) {
  const out = Object.fromEntries(names.map((n) => [n, 0]));
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/);
    if (match && match[1] in out) out[match[1]] += Number(match[3]) || 0;
  }
  return out;
}

const SERIES = [
  "cellblock_jobs_total",
  "cellblock_job_queue_seconds_sum",
  "cellblock_job_queue_seconds_count",
  "cellblock_job_run_seconds_sum",
  "cellblock_job_run_seconds_count",
];

async function pollMetrics() {
  const note = $("#metrics-note");
  let text;
  try {
    text = await callText("/metrics");
  } catch (e) {
    note.textContent =
      e.status === 404 ? "This server has no /metrics: no job rate to chart." : `Metrics unavailable: ${e.message}`;
    return;
  }
  note.textContent = "";
  const now = { at: performance.now(), ...totals(text, SERIES) };
  if (previous) {
    const dt = (now.at - previous.at) / 1000;
    const d = (name) => now[name] - previous[name];
    const mean = (base) => (d(`${base}_count`) > 0 ? d(`${base}_sum`) / d(`${base}_count`) : 0);
    const latencyMs = 1000 * (mean("cellblock_job_queue_seconds") + mean("cellblock_job_run_seconds"));
    push(rateSamples, { rate: Math.max(0, d("cellblock_jobs_total")) / dt, latency: latencyMs });
    $("#rate-now").textContent =
      `${rateSamples.at(-1).rate.toFixed(1)} jobs/s, mean latency ${latencyMs.toFixed(0)} ms`;
    drawChart($("#rate-chart"), rateSamples, [
      ["rate", "--accent", "jobs/s"],
      ["latency", "--warn", "latency ms", true],
    ]);
  }
  previous = now;
}

function renderWorkers(workers) {
  const rows = workers.map((w) =>
    el(
      "tr",
      { "data-worker": w.name },
      el("td", {}, w.host),
      el("td", { class: "mono" }, w.name),
      el("td", {}, w.slots),
      el("td", {}, el("meter", { min: 0, max: w.slots, value: w.busy }), ` ${w.busy}`),
      el("td", { class: "langs" }, w.languages.join(", ")),
      el("td", { title: w.last_seen }, ago(w.last_seen)),
    ),
  );
  const none = el(
    "tr",
    {},
    el("td", { colspan: 6, class: "muted" }, "No live worker: start one with `cellblock worker`."),
  );
  $("#workers").replaceChildren(...(rows.length ? rows : [none]));
}

function renderBacklog(backlog) {
  const rows = Object.entries(backlog)
    .sort()
    .map(([queue, n]) => el("tr", {}, el("td", { class: "mono" }, queue), el("td", {}, n)));
  const none = el("tr", {}, el("td", { colspan: 2, class: "muted" }, "No queue."));
  $("#backlog").replaceChildren(...(rows.length ? rows : [none]));
}

// Lines of `series` ([key, colour variable, label, own scale?]) over the samples, newest on the right.
function drawChart(canvas, samples, series) {
  const ctx = canvas.getContext("2d");
  const width = (canvas.width = canvas.clientWidth || 600);
  const height = canvas.height;
  const style = getComputedStyle(document.documentElement);
  ctx.clearRect(0, 0, width, height);
  const shared = Math.max(1, ...samples.flatMap((s) => series.filter((x) => !x[3]).map(([key]) => s[key])));
  const x = (i) => width - ((samples.length - 1 - i) / (SAMPLES - 1)) * width;
  const legend = [];
  for (const [key, colour, label, own] of series) {
    const top = own ? Math.max(1, ...samples.map((s) => s[key])) : shared;
    const y = (v) => height - 4 - (v / top) * (height - 22);
    ctx.strokeStyle = style.getPropertyValue(colour);
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((s, i) => (i ? ctx.lineTo(x(i), y(s[key])) : ctx.moveTo(x(i), y(s[key]))));
    ctx.stroke();
    legend.push(`${label} (max ${Number(top.toFixed(1))})`);
  }
  ctx.fillStyle = style.getPropertyValue("--fg");
  ctx.font = "12px sans-serif";
  ctx.fillText(legend.join(" · "), 6, 12);
}
