// The result panel: a JobResult as a verdict badge, the compile step, and one card per test.
import { el, fmtKib, fmtSeconds, outputText } from "./dom.js";

const VERDICT_WORDS = {
  accepted: "Accepted",
  wrong_answer: "Wrong answer",
  time_limit_exceeded: "Time limit exceeded",
  memory_limit_exceeded: "Memory limit exceeded",
  output_limit_exceeded: "Output limit exceeded",
  runtime_error: "Runtime error",
  compilation_error: "Compilation error",
  internal_error: "Internal error",
};

export const VERDICTS = Object.keys(VERDICT_WORDS);
export const verdictWords = (v) => VERDICT_WORDS[v] || v || "–";

function badge(verdict) {
  return el("span", { class: `verdict v-${verdict || "none"}`, "data-verdict": verdict || "" }, verdictWords(verdict));
}

function stats(step) {
  const exit = step.signal ? `signal ${step.signal}` : step.exit_code === null ? "–" : String(step.exit_code);
  return el(
    "dl",
    { class: "stats" },
    el("dt", {}, "Exit"),
    el("dd", { "data-stat": "exit" }, exit),
    el("dt", {}, "CPU"),
    el("dd", { "data-stat": "cpu" }, fmtSeconds(step.cpu_time_s)),
    el("dt", {}, "Wall"),
    el("dd", { "data-stat": "wall" }, fmtSeconds(step.wall_time_s)),
    el("dt", {}, "Memory"),
    el("dd", { "data-stat": "memory" }, fmtKib(step.memory_kib)),
    el("dt", {}, "Sandbox"),
    el("dd", { "data-stat": "isolation" }, step.isolation || "fresh"),
  );
}

function block(title, text, encoding, truncated, cls = "") {
  if (!text) return null;
  return el(
    "div",
    { class: `block ${cls}` },
    el("h4", {}, title, truncated ? el("span", { class: "muted" }, " (cut at the output limit)") : null),
    el("pre", {}, outputText(text, encoding)),
  );
}

// `extra` goes between the stats and the output; stdout is left out when `extra` already shows it (a diff).
function stepCard(step, extra = [], withStdout = true) {
  return [
    stats(step),
    step.message ? el("p", { class: "step-message" }, step.message) : null,
    ...extra,
    withStdout ? block("stdout", step.stdout, step.stdout_encoding, step.stdout_truncated, "stdout") : null,
    block("stderr", step.stderr, step.stderr_encoding, step.stderr_truncated, "stderr"),
  ];
}

function testCard(test, spec) {
  const run = test.run;
  const extra = [];
  if (test.verdict === "wrong_answer") {
    const expected = spec && spec.expected !== undefined ? spec.expected : null;
    extra.push(
      el(
        "div",
        { class: "diff" },
        el(
          "div",
          { class: "block expected" },
          el("h4", {}, "Expected"),
          el("pre", {}, expected ?? "(not kept by this browser)"),
        ),
        el(
          "div",
          { class: "block actual" },
          el("h4", {}, "Actual"),
          el("pre", {}, run ? outputText(run.stdout, run.stdout_encoding) : ""),
        ),
      ),
    );
  }
  if (test.checker_message) extra.push(el("p", { class: "checker" }, test.checker_message));
  return el(
    "details",
    { class: "test", open: test.verdict !== "accepted" || undefined, "data-test": test.id },
    el(
      "summary",
      {},
      el("span", { class: "test-id" }, `Test ${test.id}`),
      badge(test.verdict),
      run
        ? el("span", { class: "muted" }, ` ${fmtSeconds(run.wall_time_s)}`)
        : el("span", { class: "muted" }, " skipped"),
    ),
    run ? stepCard(run, extra, test.verdict !== "wrong_answer") : extra,
  );
}

// `tests` (optional): the test cases as the user gave them, [{stdin, expected}], to show expected output.
export function renderResult(panel, result, tests = []) {
  const parts = [
    el(
      "div",
      { class: "summary" },
      badge(result.verdict),
      el(
        "span",
        { class: "muted" },
        ` ${result.language} · ${result.state}`,
        result.worker ? ` · on ${result.worker}` : "",
      ),
    ),
  ];
  if (result.message) parts.push(el("p", { class: "step-message" }, result.message));
  if (result.compile) {
    const failed = result.verdict === "compilation_error";
    parts.push(
      el(
        "details",
        { class: "compile", open: failed || undefined },
        el("summary", {}, "Compile ", badge(failed ? "compilation_error" : "accepted")),
        el("div", { class: "compile-output" }, stepCard(result.compile)),
      ),
    );
  }
  result.tests.forEach((test, i) => parts.push(testCard(test, tests[i])));
  for (const file of result.files || []) {
    const note = `${file.size} bytes${file.truncated ? ", cut at the file limit" : ""}`;
    parts.push(block(`file ${file.name} (${note})`, file.content, file.encoding, false, "file"));
  }
  panel.replaceChildren(...parts);
}
