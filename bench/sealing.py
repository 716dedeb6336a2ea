"""What sealing job traffic costs per job: the broker message, and the job's spec, output and result in the store.

Run on demand, never as part of the test suite::

    .venv/bin/python bench/sealing.py [--iterations 10000]

Each iteration is timed on its own with ``perf_counter_ns``; the same loop doing nothing gives the baseline.
Cases: the broker message alone (seal + open of the job id), with the first key and with the second key of
the list (a job sealed before a rotation: MultiFernet tries the first key, then the next); and everything a
job seals and opens on its way (`whole job`): the message, its spec (sealed by the API, opened by the worker),
one stdout event (sealed by the worker, opened by the API's stream), and its result (sealed once by the
worker, the token stored in the hash and as the result event, opened once by the API) — for a small job (a
200-byte program) and a large one (a 64 KiB program with 64 KiB of output). Prints the median, p99 and mean
per-job cost minus the same work unsealed, and checks the target (≤ 0.5 ms per job, median) on the message
and the small job; the large one shows how the cost grows with the bytes sealed (AES + HMAC + base64).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from cryptography.fernet import Fernet

from cellblock.models import JobResult, JobSpec, StepResult, TestResult
from cellblock.sealing import Sealer
from cellblock.state import open_spec, seal_result, sealed_event

TARGET_MS = 0.5


def sample(work: Callable[[bytes], None], job_ids: list[bytes]) -> list[int]:
    timings = []
    for job_id in job_ids:
        start = time.perf_counter_ns()
        work(job_id)
        timings.append(time.perf_counter_ns() - start)
    return timings


Work = Callable[[bytes], None]


def whole_job(sealer: Sealer, program_bytes: int, output_bytes: int) -> tuple[Work, Work]:
    """(every seal and open one job goes through, the same JSON work unsealed): see the module docstring."""
    spec = JobSpec.model_validate(
        {"language": "python3", "files": [{"name": "main.py", "content": "x" * program_bytes}], "stdin": "1 2\n"}
    )
    output = "y" * output_bytes
    run = StepResult(outcome="ok", exit_code=0, cpu_time_s=0.01, wall_time_s=0.02, memory_kib=3000, stdout=output)
    result_template = JobResult(id="0" * 32, state="done", verdict="accepted", language="python3",
                                tests=[TestResult(id="1", verdict="accepted", run=run)],
                                created_at="2026-01-01T00:00:00+00:00")  # fmt: skip
    spec_json = spec.model_dump_json()
    event_json = '{"step":"test 1","data":"' + output + '","encoding":"utf8"}'

    def work(job_id: bytes) -> None:
        jid = job_id.decode()
        assert sealer.open(sealer.seal(job_id)) == job_id  # the broker message
        fields = {"id": jid, "spec": sealer.seal_for(jid, "spec", spec_json.encode())}
        open_spec(fields, sealer)
        stdout = sealed_event(jid, "stdout", event_json, sealer)
        sealer.open_for(jid, "stdout", stdout["data"])
        result = result_template.model_copy(update={"id": jid})
        stored = seal_result(result, sealer)  # one token, stored in the hash and as the result event
        sealer.open_for(jid, "result", stored)

    def unsealed(job_id: bytes) -> None:  # the same JSON work without sealing: subtracted from `work`
        jid = job_id.decode()
        JobSpec.model_validate_json(spec_json)
        result_template.model_copy(update={"id": jid}).model_dump_json()

    return work, unsealed


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
    print(f"{args.iterations} jobs; per job, minus the same work unsealed (empty loop {baseline / 1e3:.2f} µs):")
    cases: list[tuple[str, Work, float, bool]] = [  # (label, work, baseline ns, checked against the target)
        ("message, current key", current, baseline, True),
        ("message, old key (rotation)", rotated, baseline, True),
    ]
    for label, program, output, checked in (("whole job, small", 200, 20, True),
                                            ("whole job, 64 KiB in and out", 65536, 65536, False)):  # fmt: skip
        work, unsealed = whole_job(sealer, program, output)
        cases.append((label, work, statistics.median(sample(unsealed, job_ids[:2000])), checked))
    for label, work, base, checked in cases:
        timings = sorted(t - base for t in sample(work, job_ids))
        median_ms = statistics.median(timings) / 1e6
        p99_ms = timings[int(len(timings) * 0.99)] / 1e6
        mean_ms = statistics.fmean(timings) / 1e6
        print(f"  {label:32} median {median_ms:.4f} ms  p99 {p99_ms:.4f} ms  mean {mean_ms:.4f} ms")
        ok = ok and (median_ms <= TARGET_MS or not checked)
    print(f"target: median ≤ {TARGET_MS} ms per job: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
