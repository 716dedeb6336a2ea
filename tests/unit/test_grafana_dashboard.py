"""The Grafana dashboard in deploy/grafana/ queries only metrics the code exports, and shows every one of them;
the web UI's cluster view reads only exported metrics.

So neither can drift from the code: renaming a metric fails here until the dashboard and the UI follow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cellblock.observability import PROCESS_NAMES, metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "cellblock.json"
METRIC = re.compile(r"\b((?:cellblock|process)_[a-z_]+)\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def expressions(node: Any) -> list[str]:
    """Every PromQL expression in the dashboard: each panel target's `expr`, and the variables' queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found += expressions(value)
    elif isinstance(node, list):
        for item in node:
            found += expressions(item)
    return found


def family(sample_name: str, known: set[str]) -> str:
    """The family a sample name in a query belongs to (cellblock_jobs_total → cellblock_jobs)."""
    if sample_name in known:
        return sample_name
    for suffix in SUFFIXES:
        if sample_name.endswith(suffix) and sample_name.removesuffix(suffix) in known:
            return sample_name.removesuffix(suffix)
    return sample_name


def test_the_dashboard_uses_only_exported_metrics_and_all_of_them() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = metric_names()
    known = exported | set(PROCESS_NAMES)
    queries = expressions(dashboard)
    assert len(queries) >= 10
    used = {family(name, known) for query in queries for name in METRIC.findall(query)}
    assert used - known == set(), f"the dashboard queries metrics nobody exports: {sorted(used - known)}"
    assert exported - used == set(), f"exported but on no panel: {sorted(exported - used)}"


def test_every_panel_has_a_query_and_a_place() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Cellblock"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_histograms_are_read_through_their_buckets_with_le() -> None:
    """histogram_quantile needs `le` kept in every aggregation; a query that drops it draws nothing."""
    for query in expressions(json.loads(DASHBOARD.read_text())):
        if "histogram_quantile" in query:
            assert "_bucket" in query and "by (le" in query, query


def test_the_web_ui_reads_only_exported_metrics() -> None:
    """The UI's cluster view charts jobs per second and latency from /metrics: its names must exist too."""
    sources = sorted((DASHBOARD.parents[2] / "cellblock" / "web" / "src").glob("*.js"))
    known = metric_names()
    used = {family(name, known) for path in sources for name in METRIC.findall(path.read_text())}
    assert sources and used >= {"cellblock_jobs"}  # the scan sees what the UI reads
    assert used - known == set(), f"the web UI reads metrics nobody exports: {sorted(used - known)}"
