// Unit tests of the UI's pure functions (node --test; run by tests/service/test_web_ui_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { takeEvents } from "../src/api.js";
import { totals } from "../src/cluster.js";
import { fieldCandidates } from "../src/runner.js";

test("server-sent events split across chunks and line-end styles", () => {
  const stream = 'id: 1-0\nevent: state\ndata: {"state":"running"}\n\n: keepalive\n\nid: 2-0\r\nevent: stdout\r\n';
  const first = takeEvents(stream);
  assert.deepEqual(first.events, [{ id: "1-0", type: "state", data: { state: "running" } }]);
  const second = takeEvents(first.rest + 'data: {"data":"a\\n"}\r');
  assert.deepEqual(second.events, []); // a lone \r at the end may be half of \r\n
  const third = takeEvents(second.rest + "\n\r\n");
  assert.deepEqual(third.events, [{ id: "2-0", type: "stdout", data: { data: "a\n" } }]);
  assert.equal(third.rest, "");
});

test("multi-line data joins with newlines; a block without data is no event", () => {
  const { events } = takeEvents("event: x\ndata: [1,\ndata: 2]\n\nid: 5\n\n");
  assert.deepEqual(events, [{ id: "", type: "x", data: [1, 2] }]);
});

test("Prometheus totals add every label set of a series and ignore the rest", () => {
  const text = [
    "# HELP cellblock_jobs_total Jobs finished.",
    "# TYPE cellblock_jobs_total counter",
    'cellblock_jobs_total{language="c",state="done",verdict="accepted"} 3.0',
    'cellblock_jobs_total{language="python3",state="done",verdict="wrong_answer"} 4',
    'cellblock_job_run_seconds_sum{language="c"} 0.5',
    'cellblock_job_run_seconds_bucket{language="c",le="+Inf"} 3.0',
    "cellblock_jobs_created 1.7e9",
  ].join("\n");
  assert.deepEqual(totals(text, ["cellblock_jobs_total", "cellblock_job_run_seconds_sum", "absent"]), {
    cellblock_jobs_total: 7,
    cellblock_job_run_seconds_sum: 0.5,
    absent: 0,
  });
});

test("an error's field finds the closest slot", () => {
  assert.deepEqual(fieldCandidates("tests[0].stdin"), ["tests[0].stdin", "tests[0]", "tests"]);
  assert.deepEqual(fieldCandidates("limits.cpu_time_s"), ["limits.cpu_time_s", "limits"]);
  assert.deepEqual(fieldCandidates("files[1].name"), ["files[1].name", "files[1]", "files"]);
  assert.deepEqual(fieldCandidates("language"), ["language"]);
  assert.deepEqual(fieldCandidates(null), []);
});
