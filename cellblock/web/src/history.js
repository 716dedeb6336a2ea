// Job history, kept in this browser's localStorage (the API has no per-user job listing): the newest first,
// at most MAX entries, each with what is needed to reopen it (the source is kept up to MAX_SOURCE characters).
import { $, ago, el } from "./dom.js";
import { VERDICTS, verdictWords } from "./result.js";

const KEY = "cellblock.history";
const MAX = 100;
const MAX_SOURCE = 20000;

export function load() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function save(list) {
  try {
    localStorage.setItem(KEY, JSON.stringify(list.slice(0, MAX)));
  } catch {
    // storage full or disabled: history is a convenience, running still works
  }
}

export function find(id) {
  return load().find((entry) => entry.id === id) || null;
}

export function remember(entry) {
  const keep = { ...entry, source: (entry.source || "").slice(0, MAX_SOURCE) };
  save([keep, ...load().filter((e) => e.id !== entry.id)]);
}

export function update(id, fields) {
  save(load().map((e) => (e.id === id ? { ...e, ...fields } : e)));
}

export function clear() {
  localStorage.removeItem(KEY);
}

export function shareLink(id) {
  return `${location.origin}${location.pathname}#/jobs/${id}`;
}

export function render() {
  const list = load();
  const language = $("#h-language").value;
  const verdict = $("#h-verdict").value;
  const text = $("#h-text").value.trim().toLowerCase();
  fillSelect($("#h-language"), [...new Set(list.map((e) => e.language))].sort());
  // Every verdict, so a filter can be set before a job of that verdict exists; then states seen (cancelled…).
  const states = list.map((e) => e.verdict || "pending").filter((v) => !VERDICTS.includes(v));
  fillSelect($("#h-verdict"), [...VERDICTS, ...new Set(states)]);
  const shown = list.filter(
    (e) =>
      (!language || e.language === language) &&
      (!verdict || (e.verdict || "pending") === verdict) &&
      (!text || e.id.includes(text) || (e.source || "").toLowerCase().includes(text)),
  );
  $("#history").replaceChildren(
    ...shown.map((e) =>
      el(
        "tr",
        { "data-job": e.id },
        el("td", { title: e.created }, ago(e.created)),
        el("td", {}, e.language),
        el(
          "td",
          {},
          el("span", { class: `verdict v-${e.verdict || "none"}` }, e.verdict ? verdictWords(e.verdict) : "pending"),
        ),
        el("td", {}, el("a", { href: `#/jobs/${e.id}`, class: "mono" }, e.id.slice(0, 12))),
        el(
          "td",
          {},
          el("button", { type: "button", class: "copy", onclick: () => copy(shareLink(e.id)) }, "Copy link"),
        ),
      ),
    ),
  );
  if (!shown.length) {
    $("#history").replaceChildren(
      el(
        "tr",
        {},
        el(
          "td",
          { colspan: 5, class: "muted" },
          list.length ? "No job matches these filters." : "No job yet: run one and it appears here.",
        ),
      ),
    );
  }
}

function fillSelect(select, values) {
  const current = select.value;
  select.replaceChildren(
    el("option", { value: "" }, "any"),
    ...values.map((v) => el("option", { value: v }, v === "pending" ? v : verdictWords(v))),
  );
  select.value = values.includes(current) ? current : "";
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    prompt("Copy this link", text);
  }
}
