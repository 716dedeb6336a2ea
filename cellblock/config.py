"""The one typed configuration, read from ``CELLBLOCK_*`` environment variables.

Load it once at the entry point (`Settings()`), then pass it down. Units are in the names.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class LimitBounds(BaseModel):
    """Defaults and maxima for one kind of step (run or compile)."""

    cpu_time_s: float
    wall_time_s: float
    memory_mib: int
    processes: int
    output_kib: int
    file_size_kib: int


DEFAULT_RUN = LimitBounds(
    cpu_time_s=2.0, wall_time_s=5.0, memory_mib=256, processes=64, output_kib=1024, file_size_kib=10240
)
MAX_RUN = LimitBounds(
    cpu_time_s=60.0, wall_time_s=120.0, memory_mib=4096, processes=512, output_kib=65536, file_size_kib=262144
)
DEFAULT_COMPILE = LimitBounds(
    cpu_time_s=20.0, wall_time_s=40.0, memory_mib=1536, processes=128, output_kib=64, file_size_kib=131072
)
MAX_COMPILE = LimitBounds(
    cpu_time_s=120.0, wall_time_s=240.0, memory_mib=4096, processes=512, output_kib=1024, file_size_kib=262144
)


class Settings(BaseSettings):
    """Every setting Cellblock reads. Environment: ``CELLBLOCK_<NAME>`` (nested: ``__``)."""

    model_config = SettingsConfigDict(env_prefix="CELLBLOCK_", env_nested_delimiter="__", frozen=True)

    data_dir: Path = Field(Path("/var/lib/cellblock"), description="Slot work dirs and generated sandbox files.")
    slot_lock_dir: Path = Field(
        Path("/run/cellblock-slots"),
        description="Machine-wide slot locks: uids and cgroup names are per machine, so locks are too.",
    )
    max_slots: int = Field(64, ge=1, le=1000, description="How many slots may exist on this machine at once.")
    first_uid: int = Field(60000, ge=1000, description="Slot k runs as uid/gid first_uid + k.")
    bwrap_path: str = Field("bwrap", description="The bubblewrap binary.")
    cgroup_root: Path = Field(Path("/sys/fs/cgroup"), description="Where cgroupfs is mounted.")
    cgroup_name: str = Field("cellblock", description="Our subtree under each controller (v1) or the v2 root.")
    box_size_mib: int = Field(512, ge=16, description="Size of the per-job tmpfs mounted at /box.")
    box_inodes: int = Field(8192, ge=64, description="Inode cap of the /box tmpfs (many-small-files disk fill).")
    tmp_size_mib: int = Field(64, ge=1, description="Size of the per-run tmpfs at /tmp.")
    poll_interval_s: float = Field(0.01, gt=0, le=0.5, description="How often the CPU/output watcher looks.")
    isolation: Literal["fresh", "warm", "warm-shared"] = Field(
        "warm",
        description="fresh: a new bubblewrap sandbox per run. warm: runs reuse a long-lived sandbox per slot, each "
        "run in fresh pid, mount and IPC namespaces (see cellblock/sandbox/warm.py). warm-shared (opt-in, for "
        "trusted batch work): runs share the slot's namespaces; the slot is cleaned and checked after each run, "
        "but a run can see pid and inode counters of earlier runs and can signal the slot's helper (the slot is "
        "then rebuilt); see warm.py 'Shared mode'.",
    )
    warm_slots: int = Field(
        2,
        ge=1,
        le=256,
        description="How many warm slots one process keeps (isolation=warm); more jobs at once run fresh.",
    )
    prewarm_runs: int = Field(
        500,
        ge=0,
        le=100_000,
        description="isolation=warm, languages with `prewarm`: how many runs one pre-warmed interpreter serves before "
        "it is replaced (≈ 20 ms of one core). Its string-hash seed (hash(), set order) is fixed for its life, so this "
        "bounds how many runs share one. 0 turns pre-warmed interpreters off.",
    )
    allow_network: bool = Field(False, description="Whether a job may ask for network access at all.")
    languages_dir: Path | None = Field(
        None,
        description="Extra language TOML files (site languages, same schema as cellblock/languages/*.toml), "
        "read by the API and every worker: set it the same on every host.",
    )
    max_source_kib: int = Field(1024, ge=1, description="Largest total size of a job's files.")
    max_tests: int = Field(1000, ge=1, description="Most test cases in one job.")
    max_output_files_kib: int = Field(4096, ge=0, description="Cap on the total size of returned output files.")
    # --- the service (cellblock serve / worker) ---
    redis_url: str | None = Field(
        None, description="Job store (and default broker). None: the embedded private redis-server in data_dir."
    )
    broker_url: str | None = Field(None, description="Celery broker; defaults to redis_url (amqp:// for RabbitMQ).")
    api_host: str = Field("127.0.0.1", description="Where the HTTP API listens.")
    api_port: int = Field(8000, ge=0, le=65535)
    tls_cert_file: Path | None = Field(
        None, description="HTTPS for the API: its certificate (PEM, with any intermediates). None: plain HTTP."
    )
    tls_key_file: Path | None = Field(None, description="HTTPS for the API: the certificate's unencrypted key (PEM).")
    auth: Literal["auto", "required", "off"] = Field(
        "auto",
        description="API keys (cellblock keys create): 'required' on every route but health and docs; 'off' "
        "for none; 'auto' is 'required' unless the API listens on a loopback address.",
    )
    worker_slots: int | None = Field(None, ge=1, description="Sandbox slots of this worker (default: one per core).")
    worker_languages: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The languages this worker offers, by name or alias (comma-separated in "
        "CELLBLOCK_WORKER_LANGUAGES); empty: every installed language that passes its self-test.",
    )
    result_retention_s: int = Field(86400, ge=60, description="How long finished jobs and their events are kept.")
    max_backlog: int = Field(10000, ge=1, description="Queued jobs above which submissions get 503 + Retry-After.")
    max_body_kib: int = Field(16384, ge=1, description="Largest request body the API reads.")
    max_batch_jobs: int = Field(1000, ge=1, le=100000, description="Most jobs in one batch.")
    bundle_max_jobs: int = Field(
        8,
        ge=1,
        le=64,
        description="Most jobs of a batch that travel in one queue message and run one after another in the slot "
        "that takes it (fewer when the batch is small against the live slots); 1 sends one message per job.",
    )
    max_attempts: int = Field(3, ge=1, description="Deliveries of one job before it fails (poison-pill guard).")
    job_time_limit_s: int = Field(900, ge=10, description="Hard limit on one whole job; must exceed its steps.")
    visibility_timeout_s: float = Field(
        20.0,
        ge=2,
        description="Redis broker: a job whose worker stopped renewing its lease this long ago is "
        "delivered again. Running jobs renew it every third of this, so it need not exceed the longest job.",
    )
    broker_heartbeat_s: int = Field(
        1,
        ge=0,
        le=60,
        description="RabbitMQ broker: AMQP heartbeat of a worker's connection (whole seconds; 0: none). A host "
        "that vanishes without closing it has its job redelivered 2-3 heartbeats later; a worker whose event "
        "loop stalls that long is taken for dead and its job runs twice.",
    )
    cluster_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Fernet keys sealing job traffic (comma-separated in CELLBLOCK_CLUSTER_KEYS): the first seals, "
        "all open (rotation). None: a key generated once into data_dir/cluster.key (one host only).",
    )
    heartbeat_interval_s: float = Field(2.0, gt=0, description="How often a worker says it is alive.")
    toolchain_check_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often a worker looks at its languages' toolchain binaries (a stat each); a "
        "change (removed, reinstalled, upgraded, newly installed) re-runs that language's self-test.",
    )
    self_test_interval_s: float = Field(
        900.0,
        ge=0,
        description="How often a worker re-runs every self-test (catches what no stat shows, "
        "e.g. a broken library); 0: only at start and on a toolchain change.",
    )
    self_test_reuse_s: float = Field(
        900.0,
        ge=0,
        description="A starting worker trusts a self-test that passed on this machine this recently, for the same "
        "toolchain binary, language definition and Cellblock version; 0: every worker runs every self-test.",
    )
    worker_ttl_s: float = Field(10.0, gt=0, description="A worker unseen this long is considered gone.")
    webhook_attempts: int = Field(6, ge=1, description="POSTs of a result to callback_url before giving up.")
    webhook_timeout_s: float = Field(10.0, gt=0)
    shutdown_grace_s: float = Field(30.0, ge=0, description="How long running jobs may finish on shutdown.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Service logs on stderr: text lines, or one JSON object a line (cellblock.logs)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Level of Cellblock's own loggers (other libraries log at WARNING)."
    )
    metrics_open: bool = Field(
        False,
        description="Serve GET /metrics without an API key even when keys are required (a scraper on a private "
        "network); otherwise it needs a key with the 'read' scope, as every other route.",
    )
    default_run: LimitBounds = DEFAULT_RUN
    max_run: LimitBounds = MAX_RUN
    default_compile: LimitBounds = DEFAULT_COMPILE
    max_compile: LimitBounds = MAX_COMPILE

    @field_validator("cluster_keys", "worker_languages", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """``CELLBLOCK_CLUSTER_KEYS=new,old``: a comma-separated list (blank entries ignored)."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("default_run", "max_run", "default_compile", "max_compile", mode="before")
    @classmethod
    def _merge_partial_bounds(cls, value: Any, info: ValidationInfo) -> Any:
        """`CELLBLOCK_MAX_RUN__CPU_TIME_S=30` changes that one limit; the others keep their built-in values."""
        if isinstance(value, dict):
            base = {
                "default_run": DEFAULT_RUN,
                "max_run": MAX_RUN,
                "default_compile": DEFAULT_COMPILE,
                "max_compile": MAX_COMPILE,
            }[str(info.field_name)]
            return {**base.model_dump(), **value}
        return value

    @model_validator(mode="after")
    def _defaults_within_maxima(self) -> Settings:
        for default, maximum, label in (
            (self.default_run, self.max_run, "default_run"),
            (self.default_compile, self.max_compile, "default_compile"),
        ):
            for name, value in default.model_dump().items():
                if value > getattr(maximum, name):
                    raise ValueError(f"{label}.{name}={value} is above its maximum {getattr(maximum, name)}")
        return self

    def slot_count(self) -> int:
        """One slot per core unless configured otherwise."""
        return self.worker_slots or max(1, os.cpu_count() or 1)

    def auth_required(self) -> bool:
        """Whether the API asks every caller for a key (see `auth`)."""
        return self.auth == "required" or (self.auth == "auto" and not is_loopback(self.api_host))

    def redis_socket(self) -> Path:
        return self.data_dir / "redis" / "redis.sock"

    def job_store_url(self) -> str:
        """redis-py URL of the job store: the configured one, or the embedded server's unix socket."""
        return self.redis_url or f"unix://{self.redis_socket()}"

    def celery_broker_url(self) -> str:
        """Celery spells a unix socket redis+socket://; redis-py spells it unix://."""
        url = self.broker_url or self.job_store_url()
        return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


def is_loopback(host: str) -> bool:
    """Whether an address to listen on only accepts connections from this machine (127.0.0.0/8, ::1, localhost).

    Any other name or address — a wildcard like 0.0.0.0, a LAN address, a host name — counts as reachable.
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
