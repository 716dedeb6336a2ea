"""The folder runner behind `cellblock run PATH...`: every program under PATH, through a server, into a table.

Theory of operation.

1. **Find.** Every file under each PATH whose extension is a language's (the suffix of its ``source_file``:
   ``.py`` python3, ``.c`` c, ``.java`` java, …) is a program; other files (``name.in``, ``name.out``, notes)
   are not. Hidden entries and the output directory are skipped; symlinked directories are not followed.
   ``name.in`` next to ``name.<ext>`` is its stdin and ``name.out`` its expected output (then the verdict
   compares stdout with it, Judge0's whitespace rule; without it, exit 0 within limits is accepted).
2. **Serve.** With ``--server URL`` the jobs go to that server. Without it an embedded one runs for the
   duration: a private ``redis-server`` on a unix socket in a fresh directory under the data dir, one
   ``cellblock worker`` (one slot per core) and the API on a free loopback port, each in its own session,
   all stopped (then their process groups killed) when the run ends, even on Ctrl-C or SIGTERM.
3. **Submit.** Programs go in batches; a program the server refuses (its language has no live worker, an
   empty file, …) becomes a row with the server's message and the rest are resubmitted without it.
4. **Watch.** The batches are polled; a progress bar (or, off a terminal, one line per program) shows it.
5. **Write.** ``received_output/<name>.stdout`` / ``.stderr`` (a compilation error's are the compiler's),
   where ``<name>`` is the program's path under PATH without its extension (with it, when two programs share
   a stem), then ``results.csv`` and ``results.parquet``: one row per program.

Exit status: 0 when every program was accepted, 1 otherwise (see cli.py for 2 and 3).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellblock.client import ApiError, Client, result_row
from cellblock.config import Settings
from cellblock.errors import InternalError, UserError
from cellblock.local import Child, cellblock_command, start_redis, sweep_slots
from cellblock.models import JobResult, StepResult, Verdict
from cellblock.state import TERMINAL_STATES

OUTPUT_DIR = "received_output"
BATCH_SIZE = 500  # well under the default max_batch_jobs (1000); halved when the server says the body is too big
COLUMNS = {  # results.csv / results.parquet: column → pandas dtype (nullable, so a missing value stays missing)
    "file": "string", "language": "string", "verdict": "string", "state": "string", "exit_code": "Int64",
    "signal": "string", "cpu_time_s": "Float64", "wall_time_s": "Float64", "memory_kib": "Int64",
    "worker_host": "string", "worker": "string", "job_id": "string", "message": "string",
}  # fmt: skip


@dataclass(frozen=True)
class Program:
    path: Path
    name: str  # its path under PATH, as shown and in the table's `file` column
    output_stem: str  # received_output/<output_stem>.stdout
    language: str
    stdin: Path | None
    expected: Path | None


@dataclass
class Row:
    program: Program
    result: JobResult | None = None
    error: str | None = None  # why it never ran (refused by the server, unreadable)
    job_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.result is not None and self.result.verdict == Verdict.ACCEPTED


def suffix_table(languages: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Extension → language name from (name, source_file) pairs; the first language claiming a suffix wins."""
    table: dict[str, str] = {}
    for name, source_file in languages:
        suffix = Path(source_file).suffix
        if suffix:
            table.setdefault(suffix, name)
    return table


def _walk(root: Path, skip: set[Path]) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(directory, d).resolve() not in skip)
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory, name)


def discover(paths: Sequence[Path], suffixes: Mapping[str, str], skip: Sequence[Path] = ()) -> list[Program]:
    """Every program under `paths`, in a stable order, with its stdin and expected output files."""
    for path in paths:
        if not path.exists():
            raise UserError(f"{path} does not exist", field="path")
    roots = [p.resolve() for p in paths]
    base = roots[0] if len(roots) == 1 and roots[0].is_dir() else Path(os.path.commonpath([r.parent for r in roots]))
    found: dict[Path, str] = {}
    for root in roots:
        for file in _walk(root, {s.resolve() for s in skip}):
            if file.suffix in suffixes and file.resolve() not in found:
                found[file.resolve()] = suffixes[file.suffix]
    stems = [str(p.relative_to(base).with_suffix("")) for p in found]
    programs = []
    for (path, language), stem in zip(found.items(), stems, strict=True):
        name = str(path.relative_to(base))
        stdin, expected = path.with_suffix(".in"), path.with_suffix(".out")
        programs.append(
            Program(
                path=path,
                name=name,
                output_stem=name if stems.count(stem) > 1 else stem,
                language=language,
                stdin=stdin if stdin.is_file() else None,
                expected=expected if expected.is_file() else None,
            )
        )
    return programs


def _text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path.name}: {what} is not UTF-8 text (byte {exc.start})") from exc


def job_for(program: Program, limits: Mapping[str, Any]) -> dict[str, Any]:
    """The JobSpec (as JSON) of one program. Raises UserError when its files cannot be read."""
    try:
        data = program.path.read_bytes()
        source = {"name": program.path.name, "content": data.decode("utf-8"), "encoding": "utf8"}
    except UnicodeDecodeError:
        source = {"name": program.path.name, "content": base64.b64encode(data).decode(), "encoding": "base64"}
    except OSError as exc:
        raise UserError(f"cannot read {program.name}: {exc.strerror}") from exc
    job: dict[str, Any] = {"language": program.language, "files": [source], "limits": dict(limits)}
    stdin = _text(program.stdin, "its .in file") if program.stdin else ""
    if program.expected is not None:
        job["tests"] = [{"stdin": stdin, "expected_output": _text(program.expected, "its .out file")}]
    else:
        job["stdin"] = stdin
    return job


# --- the embedded server ---


@dataclass
class LoggedChild(Child):
    """A `local.Child` whose output goes to a log file (the terminal belongs to the progress bar)."""

    log: Path | None = None

    def start(self) -> None:
        self.starts.append(time.monotonic())
        with open(self.log or os.devnull, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill_group(self) -> None:
        """SIGKILL whatever is left in its process group, even after the leader exited (Celery's pool)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedServer:
    """redis-server + one worker + the API, private to one `cellblock run`, stopped on exit."""

    settings: Settings
    say: Callable[[str], None] = lambda _: None
    ready_timeout_s: float = 180.0
    root: Path | None = None
    children: list[LoggedChild] = field(default_factory=list)
    base_url: str = ""

    def __enter__(self) -> EmbeddedServer:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=self.settings.data_dir))
        private = self.settings.model_copy(update={"data_dir": self.root, "redis_url": None})
        redis_child = start_redis(private)
        self.children.append(LoggedChild(redis_child.name, redis_child.argv, redis_child.env, redis_child.proc))
        url, port = private.job_store_url(), _free_port()
        env = {k: v for k, v in os.environ.items() if k.startswith(("CELLBLOCK_", "PATH", "LANG", "LC_", "HOME"))}
        env |= {"CELLBLOCK_REDIS_URL": url, "CELLBLOCK_DATA_DIR": str(self.settings.data_dir)}
        base = cellblock_command()
        slots = str(self.settings.slot_count())
        for name, argv in (
            ("worker", [*base, "worker", "--slots", slots]),
            ("api", [*base, "serve", "--redis", url, "--host", "127.0.0.1", "--port", str(port)]),
        ):
            child = LoggedChild(name, argv, env, log=self.root / f"{name}.log")
            child.start()
            self.children.append(child)
        self.base_url = f"http://127.0.0.1:{port}"
        self.say(f"starting an embedded server ({slots} slots) for this run…")
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        with Client(self.base_url, timeout_s=2, max_retries=0) as client:
            while time.monotonic() < deadline:
                dead = [c for c in self.children if not c.alive()]
                if dead:
                    raise InternalError(f"the embedded {dead[0].name} exited: {self._log_tail(dead[0])}")
                with contextlib.suppress(ApiError):
                    if client.workers():
                        return
                time.sleep(0.1)
        raise InternalError(f"the embedded server was not ready within {self.ready_timeout_s:.0f} s")

    def _log_tail(self, child: LoggedChild) -> str:
        log = child.log or (self.root / "redis" / "redis.log" if self.root else None)
        with contextlib.suppress(OSError):
            if log is not None:
                return " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        return "(no log)"

    def stop(self) -> None:
        """API first, then the worker (its jobs are all finished), then Redis; then every group is killed."""
        grace = {"api": 10.0, "worker": 30.0, "redis": 10.0}
        for child in sorted(self.children, key=lambda c: ["api", "worker", "redis"].index(c.name)):
            child.signal(signal.SIGTERM)
            if not child.wait(grace[child.name]):
                child.signal(signal.SIGKILL)
            child.kill_group()
        self.children.clear()
        if self.root is not None:
            sweep_slots(self.settings)
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C for the duration, so the embedded server is always stopped."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- submit, watch, write ---


class Runner:
    """Submits the programs' jobs in batches and follows them to the end, reporting each finished row."""

    def __init__(self, client: Client, on_row: Callable[[Row], None]) -> None:
        self.client = client
        self.on_row = on_row
        self.batches: dict[str, dict[str, Row]] = {}  # batch id → job id → row

    def submit(self, rows: list[Row], jobs: list[dict[str, Any]]) -> None:
        """Queue every job; a job the server refuses becomes an error row and the rest go again without it."""
        pending, size = list(zip(rows, jobs, strict=True)), BATCH_SIZE
        while pending:
            chunk = pending[:size]
            try:
                submitted = self.client.submit_batch([job for _, job in chunk])
            except ApiError as exc:
                index = _refused_index(exc, len(chunk))
                if index is not None:
                    row = pending.pop(index)[0]  # the chunk is the head of `pending`
                    row.error = f"refused by the server: {exc.code}: {exc.message}"
                    self.on_row(row)
                elif exc.code in ("body_too_large", "too_many_jobs") and size > 1:
                    size = max(1, size // 2)
                else:
                    raise
                continue
            batch = {}
            for (row, _), job_id in zip(chunk, submitted.job_ids, strict=True):
                row.job_id = job_id
                batch[job_id] = row
            self.batches[submitted.id] = batch
            pending = pending[len(chunk) :]

    def follow(self) -> None:
        """Poll the unfinished batches until every job has a result."""
        interval = 0.05
        while self.batches:
            for batch_id in list(self.batches):
                status = self.client.get_batch(batch_id)
                rows = self.batches[batch_id]
                for result in status.jobs:
                    row = rows.get(result.id)
                    if row is not None and row.result is None and result.state in TERMINAL_STATES:
                        row.result = result
                        self.on_row(row)
                if status.done:
                    for row in rows.values():
                        if row.result is None:  # gone from the store (past its retention): say so
                            row.error = row.error or "the server no longer has this job's result"
                            self.on_row(row)
                    del self.batches[batch_id]
            if self.batches:
                time.sleep(interval)
                interval = min(interval * 1.5, 0.5)


def _refused_index(error: ApiError, size: int) -> int | None:
    """The index of the job a 4xx names (``jobs[3].language`` → 3), if any."""
    if not error.is_user_error or not error.field or not error.field.startswith("jobs["):
        return None
    index = error.field[5:].split("]", 1)[0]
    return int(index) if index.isdigit() and int(index) < size else None


def _decoded(step: StepResult, stream: str) -> bytes:
    text: str = getattr(step, stream)
    return base64.b64decode(text) if getattr(step, f"{stream}_encoding") == "base64" else text.encode()


def _output_step(result: JobResult) -> StepResult | None:
    """The step whose output the user wants: the compiler's after a compilation error, else the run's."""
    if result.verdict == Verdict.COMPILATION_ERROR and result.compile is not None:
        return result.compile
    runs = [t.run for t in result.tests if t.run is not None]
    return runs[0] if runs else result.compile


def table_row(row: Row, hosts: Mapping[str, str]) -> dict[str, Any]:
    """One program's row: the job's flat row (`client.result_row`) plus where it came from and ran."""
    data = result_row(row.result) if row.result is not None else {}
    worker = data.get("worker")
    ours = {
        "file": row.program.name,
        "language": row.program.language,
        "job_id": row.job_id,
        "worker_host": hosts.get(worker) if worker else None,
        "message": row.error or data.get("message"),
    }
    return {name: ours[name] if name in ours else data.get(name) for name in COLUMNS}


def write_outputs(rows: list[Row], hosts: Mapping[str, str], output_dir: Path) -> list[dict[str, Any]]:
    """received_output/<name>.stdout|.stderr, results.csv and results.parquet. Returns the table's rows."""
    import pandas as pd

    received = output_dir / OUTPUT_DIR
    for row in rows:
        step = _output_step(row.result) if row.result is not None else None
        if step is None:
            continue
        for stream in ("stdout", "stderr"):
            target = received / f"{row.program.output_stem}.{stream}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_decoded(step, stream))
    table = [table_row(row, hosts) for row in rows]
    frame = pd.DataFrame(table, columns=list(COLUMNS)).astype(COLUMNS)
    output_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output_dir / "results.csv", index=False)
    frame.to_parquet(output_dir / "results.parquet", index=False)
    return table


class Progress:
    """A live bar on a terminal (stderr); elsewhere one line per finished program, so logs show progress."""

    def __init__(self, total: int) -> None:
        from rich.console import Console

        self.total = total
        self.seen: set[int] = set()
        self.accepted = 0
        self.console = Console(stderr=True)
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            from rich import progress as rp

            self.bar = rp.Progress(
                rp.SpinnerColumn(),
                rp.TextColumn("{task.description}"),
                rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TextColumn("{task.fields[tally]}"),
                rp.TimeElapsedColumn(),
                console=self.console,
            )
            self.bar.start()
            self.task = self.bar.add_task("running", total=self.total, tally="")
        return self

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description="done")
            self.bar.stop()

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def row_done(self, row: Row) -> None:
        if id(row) in self.seen:
            return
        self.seen.add(id(row))
        self.accepted += row.accepted
        verdict = row.result.verdict.value if row.result is not None and row.result.verdict else "not run"
        if self.bar is not None:
            tally = f"{self.accepted} accepted, {len(self.seen) - self.accepted} not"
            self.bar.update(self.task, advance=1, tally=tally, description=row.program.name)
        else:
            self.say(f"[{len(self.seen)}/{self.total}] {row.program.name}: {verdict}")


@dataclass
class Options:
    paths: list[Path]
    server: str | None
    output_dir: Path
    limits: dict[str, Any]
    as_json: bool


def run_folder(options: Options, settings: Settings, echo: Callable[[str], None]) -> int:
    """`cellblock run`: 0 when every program was accepted, 1 otherwise. Raises UserError / InternalError."""
    from cellblock.languages.registry import Registry

    local = [(lang.name, lang.source_file) for lang in Registry.load(settings.languages_dir).by_extension()]
    skip = [options.output_dir / OUTPUT_DIR]
    programs = discover(options.paths, suffix_table(local), skip)
    if not programs:
        raise UserError("no programs found under " + ", ".join(map(str, options.paths)), field="path")
    progress = Progress(len(programs))
    with terminate_as_interrupt(), progress:
        if options.server is not None:
            rows, hosts = _run_on(options.server, programs, options, progress)
        else:
            with EmbeddedServer(settings, say=progress.say) as server:
                rows, hosts = _run_on(server.base_url, programs, options, progress)
    table = write_outputs(rows, hosts, options.output_dir)
    if options.as_json:
        docs = [
            {**t, "result": json.loads(r.result.model_dump_json()) if r.result else None}
            for t, r in zip(table, rows, strict=True)
        ]
        echo(json.dumps(docs, indent=2))
    else:
        echo(_summary(rows, options.output_dir))
    return 0 if all(row.accepted for row in rows) else 1


def _run_on(
    url: str, programs: list[Program], options: Options, progress: Progress
) -> tuple[list[Row], dict[str, str]]:
    rows = [Row(p) for p in programs]
    with Client(url) as client:
        try:
            live = {lang.name for lang in client.languages()}
        except ApiError as exc:
            raise InternalError(f"the server at {url} does not answer: {exc}") from exc
        runner = Runner(client, progress.row_done)
        queued, jobs = [], []
        for row in rows:
            try:
                if row.program.language not in live:
                    raise UserError(f"no live worker on the server runs {row.program.language}")
                jobs.append(job_for(row.program, options.limits))
                queued.append(row)
            except UserError as exc:
                row.error = exc.message
                progress.row_done(row)
        runner.submit(queued, jobs)
        runner.follow()
        hosts = {w.name: w.host for w in client.workers()}
    return rows, hosts


def _summary(rows: list[Row], output_dir: Path) -> str:
    lines = []
    for row in rows:
        run = result_row(row.result) if row.result is not None else None
        verdict = (run or {}).get("verdict") or "not run"
        detail = row.error or ""
        if run is not None and run["cpu_time_s"] is not None:
            detail = f"cpu {run['cpu_time_s']:.3f}s  wall {run['wall_time_s']:.3f}s  mem {run['memory_kib']} KiB"
        lines.append(f"{row.program.name:<32} {row.program.language:<11} {verdict:<22} {detail}")
    counts: dict[str, int] = {}
    for row in rows:
        key = row.result.verdict.value if row.result is not None and row.result.verdict else "not run"
        counts[key] = counts.get(key, 0) + 1
    accepted = counts.get("accepted", 0)
    others = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if k != "accepted")
    lines.append(f"{len(rows)} programs: {accepted} accepted" + (f"; {others}" if others else ""))
    lines.append(f"results: {output_dir / 'results.csv'}, {output_dir / 'results.parquet'}, {output_dir / OUTPUT_DIR}/")
    return "\n".join(lines)
