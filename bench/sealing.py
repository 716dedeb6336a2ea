"""What sealing job traffic costs per job: `Sealer.seal` (API side) + `Sealer.open` (worker side).

Run on demand, never as part of the test suite::

    .venv/bin/python bench/sealing.py [--iterations 10000]

Each iteration seals one job id and opens it again, timed on its own with ``perf_counter_ns``; the same loop
doing nothing gives the baseline. Two cases: the token opens with the first key (the normal case), and with
the second key of the list (a job sealed before a rotation: MultiFernet tries the first key, then the next).
Prints the median, p99 and mean per-job cost minus the empty loop's median, and checks the target (≤ 0.5 ms).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from cryptography.fernet import Fernet

from cellblock.sealing import Sealer

TARGET_MS = 0.5


def sample(work: Callable[[bytes], None], job_ids: list[bytes]) -> list[int]:
    timings = []
    for job_id in job_ids:
        start = time.perf_counter_ns()
        work(job_id)
        timings.append(time.perf_counter_ns() - start)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=10_000)
    args = parser.parse_args()
    new, old = Fernet.generate_key(), Fernet.generate_key()
    sealer = Sealer([new, old])
    before_rotation = Sealer([old])
    job_ids = [uuid.uuid4().hex.encode() for _ in range(args.iterations)]

    def nothing(job_id: bytes) -> None:
        pass

    def current(job_id: bytes) -> None:
        assert sealer.open(sealer.seal(job_id)) == job_id

    def rotated(job_id: bytes) -> None:
        assert sealer.open(before_rotation.seal(job_id)) == job_id

    sample(current, job_ids[:500])  # warm up
    baseline = statistics.median(sample(nothing, job_ids))
    ok = True
    print(f"{args.iterations} jobs; per job, minus the empty loop ({baseline / 1e3:.2f} µs):")
    for label, work in (("seal+open, current key", current), ("seal+open, old key (rotation)", rotated)):
        timings = sorted(t - baseline for t in sample(work, job_ids))
        median_ms = statistics.median(timings) / 1e6
        p99_ms = timings[int(len(timings) * 0.99)] / 1e6
        mean_ms = statistics.fmean(timings) / 1e6
        print(f"  {label:32} median {median_ms:.4f} ms  p99 {p99_ms:.4f} ms  mean {mean_ms:.4f} ms")
        ok = ok and median_ms <= TARGET_MS
    print(f"target: median ≤ {TARGET_MS} ms per job: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
