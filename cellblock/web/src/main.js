// Cellblock's web UI: wiring of the run view, history and cluster dashboard behind a hash router.
//
//   #/            the editor, stdin, tests and limits; Run (Ctrl-Enter) streams output, then the result panel
//   #/jobs/<id>   the same view opened on one job (a shareable link; the source too when this browser ran it)
//   #/history     jobs run from this browser (localStorage), with filters
//   #/cluster     workers, backlog per queue, a live chart
import { ApiError, apiKey, call, setApiKey } from "./api.js";
import * as cluster from "./cluster.js";
import { $, el } from "./dom.js";
import { Editor, hasGrammar } from "./editor.js";
import * as history from "./history.js";
import { cancel, clearErrors, run, showError, watch } from "./runner.js";
import { SAMPLES } from "./samples.js";

const LANG_KEY = "cellblock.language";
let languages = []; // LanguageInfo from GET /v1/languages
const editor = new Editor($("#editor"), () => runNow());

// --- test cases ----------------------------------------------------------------------------------------------

function addTest(stdin = "", expected = "") {
  const row = el(
    "tr",
    {},
    el("td", { class: "n" }),
    el("td", {}, el("textarea", { rows: 2, class: "t-stdin", spellcheck: "false", "aria-label": "test stdin" }, stdin)),
    el(
      "td",
      {},
      el("textarea", { rows: 2, class: "t-expected", spellcheck: "false", "aria-label": "expected output" }, expected),
    ),
    el(
      "td",
      {},
      el(
        "button",
        {
          type: "button",
          class: "remove",
          title: "Remove this test",
          onclick: () => {
            row.remove();
            renumber();
          },
        },
        "✕",
      ),
    ),
  );
  $("#tests").append(row);
  renumber();
  $("#tests-box").open = true;
}

function renumber() {
  const rows = [...$("#tests").rows];
  rows.forEach((row, i) => (row.cells[0].textContent = String(i + 1)));
  $("#test-count").textContent = rows.length ? `(${rows.length})` : "";
}

function readTests() {
  return [...$("#tests").rows].map((row) => ({
    stdin: row.querySelector(".t-stdin").value,
    expected: row.querySelector(".t-expected").value,
  }));
}

// --- languages -----------------------------------------------------------------------------------------------

const info = (name) => languages.find((l) => l.name === name);

async function loadLanguages() {
  const select = $("#language");
  try {
    languages = await call("GET", "/v1/languages");
  } catch (e) {
    select.replaceChildren(el("option", { value: "" }, "unavailable"));
    showError(e.field ? e : Object.assign(e, { field: "language" }));
    return;
  }
  if (!languages.length) {
    select.replaceChildren(el("option", { value: "" }, "no live worker"));
    showError(
      new ApiError(503, "no_worker", "No live worker runs any language yet: start a worker, then reload.", "language"),
    );
    return;
  }
  select.replaceChildren(
    ...languages.map((l) =>
      el(
        "option",
        { value: l.name },
        `${l.display_name}${l.version ? ` (${l.version})` : ""}${hasGrammar(l.name) ? "" : " · plain text"}`,
      ),
    ),
  );
  const saved = localStorage.getItem(LANG_KEY);
  const pick = info(saved) ? saved : info("python3") ? "python3" : languages[0].name;
  select.value = pick;
  if (!editor.text) editor.text = SAMPLES[pick] || "";
  await editor.setLanguage(pick);
}

async function changeLanguage() {
  const before = editor.current;
  const name = $("#language").value;
  localStorage.setItem(LANG_KEY, name);
  // Replace the text only when it is still the previous language's untouched sample (or empty).
  if (!editor.text.trim() || editor.text === SAMPLES[before]) editor.text = SAMPLES[name] || "";
  await editor.setLanguage(name);
}

function runNow() {
  const name = $("#language").value;
  const lang = info(name);
  return run(editor, name, readTests(), lang ? lang.source_file : "main");
}

// --- routing -------------------------------------------------------------------------------------------------

async function openJob(id) {
  clearErrors();
  const entry = history.find(id);
  if (entry) {
    if (info(entry.language)) {
      $("#language").value = entry.language;
      await editor.setLanguage(entry.language);
    }
    editor.text = entry.source || "";
    $("#stdin").value = entry.stdin || "";
    $("#tests").replaceChildren();
    (entry.tests || []).forEach((t) => addTest(t.stdin, t.expected));
    for (const name of ["cpu_time_s", "wall_time_s", "memory_mib"]) {
      const value = (entry.limits || {})[name];
      $(`#${name}`).value = typeof value === "number" ? String(value) : "";
    }
    $("#output_files").value = (entry.outputFiles || []).join(", ");
  }
  $("#live").replaceChildren();
  $("#result").replaceChildren(el("p", { class: "muted" }, "Loading the job…"));
  await watch(id, entry ? entry.tests || [] : []);
}

let watching = null;
function route() {
  const hash = location.hash || "#/";
  const job = hash.match(/^#\/jobs\/([0-9a-f]{32})$/);
  const view = hash === "#/history" ? "history" : hash === "#/cluster" ? "cluster" : "run";
  for (const name of ["run", "history", "cluster"]) $(`#view-${name}`).hidden = name !== view;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  if (view === "cluster") cluster.start();
  else cluster.stop();
  if (view === "history") history.render();
  if (job && job[1] !== watching) {
    watching = job[1];
    openJob(job[1]);
  }
  if (!job) watching = null;
}

// --- theme, key, start ---------------------------------------------------------------------------------------

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("cellblock.theme", theme);
  editor.setDark(theme === "dark");
}

function start() {
  window.cellblockStarted = true; // theme.js's check that the app's scripts ran
  $("#run").addEventListener("click", runNow);
  $("#cancel").addEventListener("click", cancel);
  $("#add-test").addEventListener("click", () => addTest());
  $("#language").addEventListener("change", changeLanguage);
  $("#theme").addEventListener("click", () =>
    setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"),
  );
  const key = $("#api-key");
  key.value = apiKey();
  key.addEventListener("change", () => {
    setApiKey(key.value.trim());
    clearErrors();
    $("#status").textContent = "";
    loadLanguages();
  });
  for (const id of ["#h-language", "#h-verdict", "#h-text"]) $(id).addEventListener("input", history.render);
  $("#h-clear").addEventListener("click", () => {
    history.clear();
    history.render();
  });
  // Ctrl-Enter runs from anywhere on the run view (stdin, tests, limits), not only from the editor.
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("#view-run").hidden && !e.defaultPrevented) {
      e.preventDefault();
      runNow();
    }
  });
  window.addEventListener("hashchange", route);
  editor.setDark(document.documentElement.dataset.theme === "dark");
  loadLanguages().then(route);
}

start();
