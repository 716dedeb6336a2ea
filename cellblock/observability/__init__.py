"""Observability: Prometheus metrics and the request id in logs (logging itself: `cellblock.logs`).

Theory of operation. Workers expose no port: they need only Redis, wherever they run, so a cluster of many
hosts is scraped through the API alone.

- The API process counts its own HTTP requests (`http.Observe`, route templates as labels) in a registry of
  its own, and serves everything at ``GET /metrics`` (`exporter`).
- Each worker records a finished job's metrics (jobs by language, state and verdict; steps by isolation; time
  in queue; run time; sandbox overhead per step) in the job store, in the transaction that stores the result
  (`jobstats`): exact counts across hosts, processes and restarts, with no multiprocess files.
- At scrape time the API reads the backlog per queue, every live worker's slots and busy slots, and the
  recorded job metrics (`exporter.cluster_families`).

`metric_names()` lists every family the API exports; tests/unit/test_grafana_dashboard.py holds the
dashboard in deploy/grafana/ to it.
"""

from __future__ import annotations

from cellblock.observability import http, jobstats

# Gauges the API computes at scrape time (`exporter`); named here so that no import of the API is needed to list them.
BACKLOG = "cellblock_queue_backlog"
SLOTS = "cellblock_worker_slots"
BUSY = "cellblock_worker_slots_busy"
PROCESS_NAMES = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds", "process_virtual_memory_bytes", "process_max_fds")  # fmt: skip


def metric_names() -> set[str]:
    """Every metric family name /metrics can export (counters without their _total suffix), but process_*."""
    return {*http.NAMES, *jobstats.NAMES, BACKLOG, SLOTS, BUSY}


__all__ = ["BACKLOG", "BUSY", "PROCESS_NAMES", "SLOTS", "metric_names"]
