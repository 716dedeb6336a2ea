"""The `cellblock` command: exec (run one program locally through the sandbox), serve, worker, keys, doctor;
`languages` lives in `cli_languages`. Exit codes: `cli_support`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from cellblock.cli_support import EXIT_NOT_ACCEPTED, fail
from cellblock.config import Settings, is_loopback
from cellblock.errors import CellblockError, InternalError, UserError
from cellblock.models import JobResult, JobSpec, Verdict


@click.group()
@click.version_option(package_name="cellblock")
def main() -> None:
    """Cellblock: run untrusted code in many languages inside a Linux sandbox."""


def _language_for(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    from cellblock.languages.registry import Registry

    by_suffix: dict[str, str] = {}
    for lang in Registry.load(Settings().languages_dir).by_extension():
        by_suffix.setdefault(Path(lang.source_file).suffix, lang.name)
    name = by_suffix.get(path.suffix)
    if name is None:
        raise UserError(f"cannot tell the language of {path.name} from its extension; pass --lang", field="lang")
    return name


def _read_text(path: Path, field: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not valid UTF-8 (byte {exc.start})", field=field) from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}", field=field) from exc


def _load_tests(path: Path) -> list[Any]:
    try:
        data = json.loads(_read_text(path, "tests"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}", field="tests") from exc
    tests = data.get("tests") if isinstance(data, dict) else data
    if not isinstance(tests, list):
        raise UserError(f'{path} must hold a list of tests or {{"tests": [...]}}', field="tests")
    return tests


def _summary(result: JobResult) -> str:
    lines = [f"verdict: {result.verdict}  ({result.language})"]
    if result.compile is not None and result.verdict == Verdict.COMPILATION_ERROR:
        lines.append(
            "compile output:\n"
            + (result.compile.stderr or result.compile.stdout or result.compile.message or "").rstrip()
        )
    for test in result.tests:
        run = test.run
        if run is None:
            continue
        status = f"exit {run.exit_code}" if run.signal is None else run.signal
        lines.append(
            f"test {test.id}: {test.verdict}  cpu {run.cpu_time_s:.3f}s  wall {run.wall_time_s:.3f}s  "
            f"mem {run.memory_kib} KiB  {status}" + (f"  ({run.message})" if run.message else "")
        )
        if test.checker_message:
            lines.append(f"  checker: {test.checker_message}")
        if len(result.tests) == 1:
            binary = run.stdout_encoding != "utf8"
            lines.append("<binary stdout, see --json>" if binary else run.stdout.rstrip("\n"))
            if run.stderr:
                lines.append("stderr:\n" + run.stderr.rstrip("\n"))
    if result.message:
        lines.append(result.message)
    return "\n".join(lines)


_ca_file_option = click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="HTTPS --server: the CA bundle that signed its certificate (default: $CELLBLOCK_CA_FILE, else the "
    "system's trust store).",
)


@main.command("exec")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--lang", "lang", help="Language name or alias (default: from the file extension).")
@click.option("--stdin", "stdin_file", type=click.Path(path_type=Path, dir_okay=False), help="File to use as stdin.")
@click.option(
    "--tests",
    "tests_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON: [{"stdin": "...", "expected_output": "..."}, ...]',
)
@click.option("--cpu-time", type=float, help="CPU time limit per test, seconds.")
@click.option("--wall-time", type=float, help="Wall time limit per test, seconds.")
@click.option("--memory", type=int, help="Memory limit per test, MiB.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly the JobResult JSON.")
@click.option("--server", "server", metavar="URL", help="Run it through this Cellblock server instead of here.")
@_ca_file_option
def exec_command(
    file: Path,
    lang: str | None,
    stdin_file: Path | None,
    tests_file: Path | None,
    cpu_time: float | None,
    wall_time: float | None,
    memory: int | None,
    as_json: bool,
    server: str | None,
    ca_file: Path | None,
) -> None:
    """Run FILE once through the sandbox, here (or on --server URL). Exit 0 only when accepted."""
    limits = {"cpu_time_s": cpu_time, "wall_time_s": wall_time, "memory_mib": memory}
    try:
        if server is None:
            result = _exec(file, lang, stdin_file, tests_file, limits)
        else:
            result = _exec_remote(server, _job_spec(file, lang, stdin_file, tests_file, limits), ca_file)
    except CellblockError as exc:
        fail(exc)
        return
    click.echo(result.model_dump_json(indent=2) if as_json else _summary(result))
    sys.exit(0 if result.verdict == Verdict.ACCEPTED else EXIT_NOT_ACCEPTED)


def _exec(
    file: Path, lang: str | None, stdin_file: Path | None, tests_file: Path | None, limits: dict[str, Any]
) -> JobResult:
    from cellblock.engine import Engine
    from cellblock.languages.registry import Registry
    from cellblock.sandbox.host import SandboxHost

    spec = _job_spec(file, lang, stdin_file, tests_file, limits)
    settings = Settings()
    return Engine(settings, Registry.load(settings.languages_dir), SandboxHost(settings)).run(spec)


def _exec_remote(server: str, spec: JobSpec, ca_file: Path | None = None) -> JobResult:
    from cellblock.client import ApiError, Client

    try:
        with Client(server, verify=ca_file) as client:
            return client.run(spec)
    except ApiError as exc:
        error = UserError if exc.is_user_error else InternalError
        prefix = "" if exc.is_user_error else f"{server}: "
        raise error(prefix + exc.message, field=exc.field) from exc


def _job_spec(
    file: Path, lang: str | None, stdin_file: Path | None, tests_file: Path | None, limits: dict[str, Any]
) -> JobSpec:
    fields: dict[str, Any] = {
        "language": _language_for(file, lang),
        "files": [{"name": file.name, "content": _read_text(file, "files[0].content")}],
        "limits": {k: v for k, v in limits.items() if v is not None},
    }
    if stdin_file is not None:
        fields["stdin"] = _read_text(stdin_file, "stdin")
    if tests_file is not None:
        fields["tests"] = _load_tests(tests_file)
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(first["msg"], field=".".join(str(p) for p in first["loc"])) from exc


def _service_settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


_log_format_option = click.option(
    "--log-format", type=click.Choice(["text", "json"]),
    help="Logs on stderr as text lines or one JSON object a line (default: $CELLBLOCK_LOG_FORMAT, else text).",
)  # fmt: skip


def _start_logging(settings: Settings) -> Callable[[str], None]:
    """Configure the logs (`cellblock.logs`); the children of the embedded launcher inherit the format. Returns
    how to tell the operator something: printed in text mode, a log line in JSON mode."""
    from cellblock.logs import configure, sayer

    configure(settings.log_format, settings.log_level)
    os.environ["CELLBLOCK_LOG_FORMAT"] = settings.log_format
    return sayer(settings.log_format, click.echo)


@main.command("serve")
@click.option("--redis", "redis_url", help="Use this Redis (redis://, rediss://, unix://) and run the API only.")
@click.option("--broker", "broker_url", help="Celery broker URL (default: the Redis).")
@click.option("--host", help="Address the API listens on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port of the API (default 8000).")
@click.option("--slots", type=int, help="Sandbox slots (embedded mode; default: one per core).")
@click.option("--insecure-no-auth", is_flag=True, help="Take requests without an API key even on an address "
              "other machines can reach (default: keys are required there).")  # fmt: skip
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False), help="Serve HTTPS with this certificate "
              "(PEM; CELLBLOCK_TLS_CERT_FILE).")  # fmt: skip
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="The certificate's unencrypted key "
              "(PEM; CELLBLOCK_TLS_KEY_FILE).")  # fmt: skip
@_log_format_option
def serve_command(redis_url: str | None, broker_url: str | None, host: str | None, port: int | None,
                  slots: int | None, insecure_no_auth: bool, tls_cert: Path | None,
                  tls_key: Path | None, log_format: str | None) -> None:  # fmt: skip
    """Run Cellblock. Without --redis: a private Redis, workers and the API, nothing to configure."""
    settings = _service_settings(redis_url=redis_url, broker_url=broker_url, api_host=host, api_port=port,
                                 worker_slots=slots, auth="off" if insecure_no_auth else None,
                                 tls_cert_file=tls_cert, tls_key_file=tls_key, log_format=log_format)  # fmt: skip
    say = _start_logging(settings)
    _preflight(settings, api=True)
    _check_broker(settings)
    if insecure_no_auth:
        os.environ["CELLBLOCK_AUTH"] = "off"  # the embedded launcher's API process inherits the choice
    _check_auth(settings)
    if settings.redis_url is None:
        from cellblock.local import serve_embedded

        try:
            sys.exit(serve_embedded(settings, say))
        except CellblockError as exc:
            fail(exc)
    _check_cluster_key(settings)
    import uvicorn

    from cellblock.api import create_app

    # log_config=None: uvicorn's loggers go through ours (cellblock.logs); the access line is the API's own
    # (cellblock.observability.http), which carries the request id.
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning",
                timeout_graceful_shutdown=10, ssl_certfile=settings.tls_cert_file,
                ssl_keyfile=settings.tls_key_file, log_config=None, access_log=False)  # fmt: skip


def _preflight(settings: Settings, *, api: bool = False) -> None:
    """Fail fast with one line: the job store's URL and reachability (`preflight.py`), the API's certificate."""
    from cellblock import preflight

    try:
        if api:
            preflight.check_api_tls(settings)
        preflight.check_store(settings)
    except CellblockError as exc:
        fail(exc)


def _check_broker(settings: Settings) -> None:
    """A malformed --broker URL, or a RabbitMQ that does not answer: one line and a non-zero exit, not a retry loop."""
    from cellblock.dispatch import check_broker_url, ping_broker

    try:
        if settings.broker_url is not None:
            check_broker_url(settings.broker_url)
        ping_broker(settings, timeout_s=3.0)
    except CellblockError as exc:
        fail(exc)


def _check_cluster_key(settings: Settings) -> None:
    """An API whose cluster keys differ from the cluster's would accept jobs no worker opens: refuse to start."""
    from cellblock.sealing import Sealer
    from cellblock.state import check_cluster_key

    try:
        with _job_store(settings) as client:
            check_cluster_key(client, Sealer.from_settings(settings))
    except CellblockError as exc:
        fail(exc)


def _check_auth(settings: Settings) -> None:
    """Keys required (CELLBLOCK_AUTH=required, or 'auto' off loopback) and none usable: refuse to start."""
    where = f"{settings.api_host}:{settings.api_port}"
    if not settings.auth_required():
        if not is_loopback(settings.api_host):
            click.echo(f"warning: auth is off: anyone who can reach {where} may run code on this cluster", err=True)
        return
    from cellblock.auth import Keys

    try:
        with _job_store(settings) as client:
            usable = Keys(client).usable()
    except CellblockError as exc:
        fail(exc)
    if usable == 0:
        why = "API keys are required (CELLBLOCK_AUTH=required)"
        if not is_loopback(settings.api_host):
            why = f"the API would listen on {settings.api_host}, an address other machines can reach,"
        fail(UserError(f"{why} and the job store holds no usable API key. Create one with `cellblock keys create "
                        "--name NAME --scopes submit,read` (same --redis), or pass --insecure-no-auth to serve "
                        "without keys", field="auth"))  # fmt: skip


@contextlib.contextmanager
def _job_store(settings: Settings) -> Iterator[Any]:
    """A Redis client on the job store. With nothing configured: the embedded server's socket, or — when
    `cellblock serve` is not running — that same private redis-server started just for this command."""
    import redis

    from cellblock.redis_url import redacted, redis_kwargs

    url = settings.job_store_url()
    client = redis.Redis(**redis_kwargs(url), decode_responses=True, socket_connect_timeout=5, socket_timeout=10)
    child = None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        if settings.redis_url is not None:
            raise InternalError(f"cannot reach the job store at {redacted(url)}: {exc}") from exc
        from cellblock.local import start_redis

        child = start_redis(settings)
    try:
        yield client
    finally:
        client.close()
        if child is not None:
            child.signal(signal.SIGTERM)  # redis flushes its AOF, removes its socket and exits
            if not child.wait(30):
                child.signal(signal.SIGKILL)


@main.group("keys")
def keys_group() -> None:
    """API keys: create (the key is shown once), list, revoke. Kept hashed in the job store's Redis."""


_redis_option = click.option("--redis", "redis_url", help="The job store (default: CELLBLOCK_REDIS_URL, else the "
                             "embedded server's socket in the data dir).")  # fmt: skip


@contextlib.contextmanager
def _keys(redis_url: str | None) -> Iterator[Any]:
    from cellblock.auth import Keys

    settings = _service_settings(redis_url=redis_url)
    _preflight(settings)
    try:
        with _job_store(settings) as client:
            yield Keys(client)
    except CellblockError as exc:
        fail(exc)


@keys_group.command("create")
@_redis_option
@click.option("--name", required=True, help="Who holds the key (shown in listings).")
@click.option("--scopes", required=True, help="Comma-separated: read, submit, admin (admin implies the others).")
@click.option("--rate", help="Requests per period over every route: 20/s, 600/min, 1000/h (default: no limit).")
@click.option("--max-running", type=int, help="Most jobs queued or running at once (default: no limit).")
@click.option("--daily-jobs", type=int, help="Most jobs per UTC day (default: no limit).")
@click.option("--expires-in-days", type=float, help="Lifetime in days (default: until revoked).")
@click.option("--json", "as_json", is_flag=True, help="Print the key and its record as JSON.")
def keys_create(redis_url: str | None, name: str, scopes: str, rate: str | None, max_running: int | None,
                daily_jobs: int | None, expires_in_days: float | None, as_json: bool) -> None:  # fmt: skip
    """Create an API key and print it on stdout: this once only, since Redis keeps only its hash."""
    from cellblock.auth import KeyRequest

    try:
        request = KeyRequest(name=name, scopes=[s.strip() for s in scopes.split(",") if s.strip()],
                             rate=rate, max_running=max_running, daily_jobs=daily_jobs,
                             expires_in_days=expires_in_days)  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-")
        fail(UserError(f"{option}: {first['msg'].removeprefix('Value error, ')}", field=option))
        return
    with _keys(redis_url) as keys:
        created = keys.create(request)
    if as_json:
        click.echo(created.model_dump_json(indent=2))
        return
    click.echo(created.key)
    limits = ", ".join(f"{label} {value}" for label, value in (("rate", created.rate), ("max-running",
                       created.max_running), ("daily-jobs", created.daily_jobs), ("expires", created.expires_at))
                       if value is not None) or "no limits"  # fmt: skip
    click.echo(f"key {created.id} ({created.name}): scopes {','.join(created.scopes)}; {limits}. "
               "This is the only time the key is shown: store it now.", err=True)  # fmt: skip


@keys_group.command("list")
@_redis_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(redis_url: str | None, as_json: bool) -> None:
    """Every key with its status, limits and usage (never the key itself)."""
    with _keys(redis_url) as keys:
        found = keys.list_keys()
    if as_json:
        click.echo(json.dumps([k.model_dump(mode="json") for k in found], indent=2))
        return
    click.echo(f"{'ID':<17}{'NAME':<20}{'SCOPES':<19}{'STATUS':<9}{'RATE':<10}{'RUNNING':<10}{'TODAY':<14}"
               "EXPIRES           LAST USED")  # fmt: skip
    for k in found:
        running = f"{k.running}/{k.max_running}" if k.max_running else "-"
        today = f"{k.jobs_today}/{k.daily_jobs}" if k.daily_jobs else str(k.jobs_today)
        expires = f"{k.expires_at:%Y-%m-%d %H:%M}" if k.expires_at else "-"
        used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "-"
        click.echo(f"{k.id:<17}{k.name[:19]:<20}{','.join(k.scopes):<19}{k.status:<9}{k.rate or '-':<10}"
                   f"{running:<10}{today:<14}{expires:<18}{used}")  # fmt: skip


@keys_group.command("revoke")
@_redis_option
@click.argument("key_id", metavar="ID")
def keys_revoke(redis_url: str | None, key_id: str) -> None:
    """Revoke key ID at once and for good (it stays listed, as revoked)."""
    with _keys(redis_url) as keys:
        key = keys.revoke(key_id.strip())
    if key is None:
        fail(UserError(f"no API key {key_id!r} (see `cellblock keys list`)", field="id"))
        return
    click.echo(f"revoked {key.id} ({key.name})")


@main.command("worker")
@click.option("--redis", "redis_url", help="The cluster's Redis (job store; broker unless --broker).")
@click.option("--broker", "broker_url", help="Celery broker URL, e.g. amqp://… for RabbitMQ.")
@click.option("--slots", type=int, help="Sandbox slots on this host (default: one per core).")
@click.option("--name", help="Worker name (default: cellblock-<host>-<pid>).")
@click.option(
    "--languages",
    "languages",
    metavar="NAMES",
    help="Offer only these languages (comma-separated names or aliases; default: every installed one).",
)
@_log_format_option
def worker_command(redis_url: str | None, broker_url: str | None, slots: int | None, name: str | None,
                   languages: str | None, log_format: str | None) -> None:  # fmt: skip
    """Join a cluster: self-test every language, then run jobs of those that passed."""
    from cellblock.workerhost import start_worker

    settings = _service_settings(redis_url=redis_url, broker_url=broker_url, worker_slots=slots,
                                 worker_languages=languages, log_format=log_format)  # fmt: skip
    say = _start_logging(settings)
    if settings.redis_url is None:
        fail(UserError("a worker needs --redis URL (or CELLBLOCK_REDIS_URL)", field="redis"))
    try:
        from cellblock.languages.registry import Registry
        from cellblock.workerhost import offered_languages

        offered_languages(settings, Registry.load(settings.languages_dir))  # a misspelt --languages: exit 2 now
    except UserError as exc:
        fail(exc)
    _preflight(settings)
    _check_broker(settings)
    try:
        sys.exit(start_worker(settings, say, name=name))
    except CellblockError as exc:
        fail(exc)


@main.command("webhooks")
@click.option("--redis", "redis_url", help="The cluster's Redis.")
@click.option("--broker", "broker_url", help="Celery broker URL.")
@_log_format_option
def webhooks_command(redis_url: str | None, broker_url: str | None, log_format: str | None) -> None:
    """Deliver finished jobs to their callback_url (asyncio, retried with backoff; no sandbox needed)."""
    from cellblock.webhooks import run_sender

    settings = _service_settings(redis_url=redis_url, broker_url=broker_url, log_format=log_format)
    _start_logging(settings)
    if settings.redis_url is None:
        fail(UserError("webhooks need --redis URL (or CELLBLOCK_REDIS_URL)", field="redis"))
    _preflight(settings)
    sys.exit(run_sender(settings))


@main.command("run")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...", type=click.Path(path_type=Path))
@click.option("--server", "server", metavar="URL", help="Send the jobs to this server (default: an embedded one).")
@click.option("--json", "as_json", is_flag=True, help="Print every program's row and JobResult as JSON.")
@click.option("--cpu-time", type=float, help="CPU time limit per program, seconds.")
@click.option("--wall-time", type=float, help="Wall time limit per program, seconds.")
@click.option("--memory", type=int, help="Memory limit per program, MiB.")
@click.option(
    "--output",
    "output_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where received_output/, results.csv and results.parquet go.",
)
@_ca_file_option
def run_command(
    paths: tuple[Path, ...],
    server: str | None,
    as_json: bool,
    cpu_time: float | None,
    wall_time: float | None,
    memory: int | None,
    output_dir: Path,
    ca_file: Path | None,
) -> None:
    """Run every program under PATH (language by extension; NAME.in is stdin, NAME.out the expected output)
    and write received_output/, results.csv and results.parquet. Exit 0 only when all were accepted."""
    from cellblock.client import CA_FILE_ENV
    from cellblock.folder import Options, run_folder

    if ca_file is not None:
        os.environ[CA_FILE_ENV] = str(ca_file)  # the runner's Client reads it (as any SDK user's would)

    given = {"cpu_time_s": cpu_time, "wall_time_s": wall_time, "memory_mib": memory}
    limits = {k: v for k, v in given.items() if v is not None}
    options = Options(paths=list(paths), server=server, output_dir=output_dir, limits=limits, as_json=as_json)
    try:
        sys.exit(run_folder(options, Settings(), click.echo))
    except CellblockError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


@main.command("doctor")
def doctor_command() -> None:
    """Check every prerequisite of the sandbox and each toolchain; say how to fix what is missing."""
    from cellblock.doctor import run_doctor

    sys.exit(run_doctor(Settings(), click.echo))


def _add_command_groups() -> None:
    from cellblock.cli_languages import languages_group

    main.add_command(languages_group)


_add_command_groups()
