// The cluster dashboard: live workers and backlog from GET /v1/workers, polled every POLL_MS while the view is
// open, and a chart of busy slots and waiting jobs over the last SAMPLES polls.
import { call } from "./api.js";
import { $, ago, el } from "./dom.js";

const POLL_MS = 2000;
const SAMPLES = 90;
const samples = [];
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
}

async function poll() {
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
  samples.push({ busy, slots, waiting });
  if (samples.length > SAMPLES) samples.shift();
  drawChart($("#chart"));
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
  $("#workers").replaceChildren(
    ...(rows.length
      ? rows
      : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No live worker: start one with `cellblock worker`."))]),
  );
}

function renderBacklog(backlog) {
  const rows = Object.entries(backlog)
    .sort()
    .map(([queue, n]) => el("tr", {}, el("td", { class: "mono" }, queue), el("td", {}, n)));
  $("#backlog").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 2, class: "muted" }, "No queue."))]),
  );
}

function drawChart(canvas) {
  const ctx = canvas.getContext("2d");
  const width = (canvas.width = canvas.clientWidth || 600);
  const height = canvas.height;
  const style = getComputedStyle(document.documentElement);
  ctx.clearRect(0, 0, width, height);
  const top = Math.max(1, ...samples.map((s) => Math.max(s.slots, s.waiting)));
  const x = (i) => (i / (SAMPLES - 1)) * width;
  const y = (v) => height - 4 - (v / top) * (height - 20);
  const line = (key, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((s, i) => (i ? ctx.lineTo(x(i), y(s[key])) : ctx.moveTo(x(i), y(s[key]))));
    ctx.stroke();
  };
  line("slots", style.getPropertyValue("--muted"));
  line("busy", style.getPropertyValue("--accent"));
  line("waiting", style.getPropertyValue("--bad"));
  ctx.fillStyle = style.getPropertyValue("--fg");
  ctx.font = "12px sans-serif";
  ctx.fillText(`max ${top} · slots (grey) · busy (accent) · waiting (red)`, 6, 12);
}
