// Run a job from the form: build the JobSpec, POST /v1/jobs, stream its events into the live panel, then show
// the result. Errors of the API land next to the field they name, or in the result panel's error box.
import { ApiError, call, streamEvents } from "./api.js";
import { $, el, outputText } from "./dom.js";
import * as history from "./history.js";
import { renderResult } from "./result.js";

const TERMINAL = new Set(["done", "failed", "cancelled"]);
let running = null; // {id, abort} of the job being watched

export function clearErrors() {
  document.querySelectorAll(".field-error").forEach((p) => (p.textContent = ""));
  document.querySelectorAll("[aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
  $("#run-error").hidden = true;
}

// Where a message about `field` may go, most precise first: "tests[0].stdin" -> tests[0].stdin, tests[0], tests.
export function fieldCandidates(field) {
  const out = [];
  let name = field || "";
  while (name) {
    out.push(name);
    const dot = name.lastIndexOf(".");
    const bracket = name.lastIndexOf("[");
    name = name.slice(0, Math.max(dot, bracket, 0));
  }
  return out;
}

// The message slot for `field` (null: the result panel's error box) and the name it was found under.
function slotFor(field) {
  for (const name of fieldCandidates(field)) {
    const slot = document.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (slot) return { slot, name };
  }
  return null;
}

export function showError(error) {
  const message = error instanceof ApiError ? error.message : `Unexpected error: ${error.message || error}`;
  const found = error.field ? slotFor(error.field) : null;
  if (found) {
    found.slot.textContent = message;
    const input = document.querySelector(`[data-field="${CSS.escape(found.name)}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.scrollIntoView({ block: "nearest" });
    }
  } else {
    const box = $("#run-error");
    box.textContent = message;
    box.hidden = false;
  }
  setStatus(error.status ? `error ${error.status}` : "error");
}

export function setStatus(text) {
  $("#status").textContent = text;
}

function limits() {
  const out = {};
  for (const name of ["cpu_time_s", "wall_time_s", "memory_mib"]) {
    const raw = $(`#${name}`).value.trim();
    // A number the browser could not parse reads as "" with badInput set: send it so the API names the field.
    if ($(`#${name}`).validity.badInput) out[name] = "not a number";
    else if (raw !== "") out[name] = Number(raw);
  }
  return out;
}

export function buildSpec(editor, language, tests, sourceFile) {
  const spec = {
    language,
    files: [{ name: sourceFile || "main", content: editor.text }],
    limits: limits(),
  };
  const globs = $("#output_files")
    .value.split(",")
    .map((g) => g.trim())
    .filter(Boolean);
  if (globs.length) spec.output_files = globs;
  const cases = tests.filter((t) => t.stdin !== "" || t.expected !== "");
  if (cases.length)
    spec.tests = cases.map((t) => ({ stdin: t.stdin, expected_output: t.expected === "" ? null : t.expected }));
  else spec.stdin = $("#stdin").value;
  return { spec, cases };
}

function live() {
  return $("#live");
}

function appendLive(text, cls) {
  const pane = live();
  const atBottom = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
  // Chunks of the same stream go into one node: a chatty program adds text, not thousands of DOM nodes.
  const last = pane.lastChild;
  if (!cls && last && last.nodeType === Node.TEXT_NODE) last.appendData(text);
  else if (cls && cls !== "step" && last && last.nodeName === "SPAN" && last.className === cls)
    last.lastChild.appendData(text);
  else pane.append(cls ? el("span", { class: cls }, text) : document.createTextNode(text));
  if (atBottom) pane.scrollTop = pane.scrollHeight;
}

function onEvent(event) {
  const data = event.data || {};
  if (event.type === "state") setStatus(data.state);
  else if (event.type === "step" && data.phase === "started") {
    appendLive(`── ${data.step === "compile" ? "compile" : `test ${data.step}`} ──\n`, "step");
  } else if (event.type === "stdout" || event.type === "stderr") {
    appendLive(outputText(data.data, data.encoding), event.type === "stderr" ? "stderr" : null);
  }
}

export function setRunning(id) {
  $("#run").disabled = id !== null;
  $("#cancel").hidden = id === null;
}

// Watch job `id` to its end: live events, then the result. `cases` gives the expected outputs to show.
export async function watch(id, cases = []) {
  if (running) running.abort.abort();
  const abort = new AbortController();
  running = { id, abort };
  setRunning(id);
  $("#job-link").replaceChildren(
    el("a", { href: `#/jobs/${id}`, class: "mono", title: "Shareable link to this job" }, `job ${id.slice(0, 12)}`),
  );
  try {
    let result = await call("GET", `/v1/jobs/${id}`);
    if (!TERMINAL.has(result.state)) {
      let final = null;
      await streamEvents(
        id,
        (event) => {
          if (event.type === "result") final = event.data;
          else onEvent(event);
        },
        abort.signal,
      );
      if (abort.signal.aborted) return;
      result = final || (await call("GET", `/v1/jobs/${id}`));
    } else if (!live().childNodes.length) {
      replayOutput(result);
    }
    setStatus(result.state);
    renderResult($("#result"), result, cases);
    history.update(id, { verdict: result.verdict || result.state });
  } catch (e) {
    if (!abort.signal.aborted) showError(e);
  } finally {
    if (running && running.id === id) {
      running = null;
      setRunning(null);
    }
  }
}

// A finished job opened from a link: its output, as the live panel would have shown it.
function replayOutput(result) {
  for (const test of result.tests) {
    if (!test.run) continue;
    appendLive(`── test ${test.id} ──\n`, "step");
    appendLive(outputText(test.run.stdout, test.run.stdout_encoding));
    if (test.run.stderr) appendLive(outputText(test.run.stderr, test.run.stderr_encoding), "stderr");
  }
}

export async function run(editor, language, tests, sourceFile) {
  if (running || $("#run").disabled) return; // a job is being watched or submitted (Ctrl-Enter twice)
  clearErrors();
  if (!language) {
    showError(new ApiError(422, "missing_field", "Pick a language first.", "language"));
    return;
  }
  const { spec, cases } = buildSpec(editor, language, tests, sourceFile);
  live().replaceChildren();
  $("#result").replaceChildren(el("p", { class: "muted" }, "Running…"));
  setStatus("submitting");
  setRunning("pending");
  let accepted;
  try {
    accepted = await call("POST", "/v1/jobs", spec);
  } catch (e) {
    setRunning(null);
    $("#result").replaceChildren(el("p", { class: "muted" }, "Not run."));
    showError(e);
    return;
  }
  history.remember({
    id: accepted.id,
    language,
    created: new Date().toISOString(),
    verdict: null,
    source: editor.text,
    stdin: spec.stdin ?? "",
    tests: cases,
    limits: spec.limits,
    outputFiles: spec.output_files || [],
  });
  window.history.replaceState(null, "", `#/jobs/${accepted.id}`);
  await watch(accepted.id, cases);
}

export async function cancel() {
  if (!running || running.id === "pending") return;
  try {
    await call("DELETE", `/v1/jobs/${running.id}`);
  } catch (e) {
    showError(e);
  }
}
