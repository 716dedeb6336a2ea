"""Sealed job traffic: a worker runs only messages sealed with a current cluster key.

The forged messages are real kombu Redis-transport messages: the test takes a message the API really queued
(no worker is consuming yet), drops the real ones, and pushes copies whose only argument is replaced — by a
bare job id, by garbage, by a token sealed with a key the cluster does not hold, and by a token sealed with
the old key that is still second in the list (rotation: that one must run).
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet

from cellblock.dispatch import language_queue
from cellblock.state import job_key
from tests.service.conftest import Service, made_service, wait_until

pytestmark = pytest.mark.sandbox

KEY_NEW, KEY_OLD, KEY_OTHER = (Fernet.generate_key() for _ in range(3))
QUEUE = language_queue("python3")


def job(tag: str) -> dict[str, Any]:
    return {"language": "python3", "files": [{"name": "m.py", "content": f"print('ran {tag}')"}]}


def forge(template: dict[str, Any], argument: Any) -> str:
    """A copy of a real queued message with its one argument replaced, and fresh ids."""
    message = copy.deepcopy(template)
    _args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    message["body"] = base64.b64encode(json.dumps([[argument], kwargs, embed]).encode()).decode()
    task_id = str(uuid.uuid4())
    message["headers"].update(id=task_id, root_id=task_id, argsrepr=repr([argument]))
    message["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
    return json.dumps(message)


@pytest.fixture(scope="module")
def sealed_service() -> Iterator[Service]:
    with made_service(CELLBLOCK_CLUSTER_KEYS=f"{KEY_NEW.decode()}, {KEY_OLD.decode()}") as svc:
        svc.start_api()
        yield svc


def test_forged_messages_rejected_rotated_key_runs(sealed_service: Service) -> None:
    svc = sealed_service
    r: redis.Redis = svc.redis.client()
    with svc.client() as api:
        ids = {}
        for tag in ("plain", "other-key", "old-key"):
            response = api.post("/v1/jobs", json=job(tag))
            assert response.status_code == 202, response.text
            ids[tag] = response.json()["id"]
        queued = r.lrange(QUEUE, 0, -1)
        assert len(queued) == 3
        template = json.loads(queued[0])
        real_args = json.loads(base64.b64decode(template["body"]))[0]
        assert real_args[0] not in ids.values() and real_args[0].startswith("gAAAAA")  # sealed, not the bare id
        r.delete(QUEUE)  # only the forged messages remain

        forged = [
            forge(template, ids["plain"]),  # the bare job id: what an unsealed cluster would accept
            forge(template, "not-a-token"),
            forge(template, 12345),
            forge(template, Fernet(KEY_OTHER).encrypt(ids["other-key"].encode()).decode()),
            forge(template, Fernet(KEY_OLD).encrypt(ids["old-key"].encode()).decode()),  # rotation: still valid
        ]
        for message in forged:
            r.lpush(QUEUE, message)  # kombu's Redis transport: LPUSH to publish, BRPOP to consume

        worker = svc.start_worker(slots=2)
        svc.wait_ready()
        wait_until(lambda: api.get(f"/v1/jobs/{ids['old-key']}").json()["state"] == "done", timeout=60,
                   what="the job sealed with the old key")  # fmt: skip
        body = api.get(f"/v1/jobs/{ids['old-key']}").json()
        assert body["verdict"] == "accepted" and body["tests"][0]["run"]["stdout"] == "ran old-key\n", body

        normal = api.post("/v1/jobs", params={"wait": "true"}, json=job("normal"))
        assert normal.status_code == 200 and normal.json()["verdict"] == "accepted", normal.text

        # every forged message was consumed and acked (not left unacked for redelivery) ...
        wait_until(lambda: r.llen(QUEUE) == 0 and r.hlen("unacked") == 0, timeout=30, what="the queue to drain")
        log_path = svc.root / "worker-0.log"
        wait_until(lambda: log_path.read_text().count("rejected message") == 4, timeout=10, what="4 rejections")
        # ... and the jobs behind them never ran: still queued, never attempted, no worker touched them
        for tag in ("plain", "other-key"):
            fields = r.hgetall(job_key(ids[tag]))
            assert fields["state"] == "queued", fields
            assert fields["attempts"] == "0" and "started_at" not in fields and "worker" not in fields, fields
        log = log_path.read_text()
        assert "not sealed with a current cluster key" in log, log
        assert worker.poll() is None, "a forged message must not crash the worker"
        # and the worker still runs sealed jobs after the rejections
        again = api.post("/v1/jobs", params={"wait": "true"}, json=job("after"))
        assert again.status_code == 200 and again.json()["tests"][0]["run"]["stdout"] == "ran after\n"


def test_embedded_default_key_file(tmp_path: Any) -> None:
    """No cluster key configured: one key generated into the data dir (0600), then read by every process."""
    from cellblock.config import Settings
    from cellblock.sealing import Sealer, SealError, local_key_path

    settings = Settings(data_dir=tmp_path / "data")
    first = Sealer.from_settings(settings)
    path = local_key_path(settings)
    assert path.stat().st_mode & 0o777 == 0o600
    key = path.read_bytes()
    token = first.seal(b"job")
    assert Sealer.from_settings(settings).open(token) == b"job" and path.read_bytes() == key  # reused, not regenerated
    with pytest.raises(SealError):
        Sealer([Fernet.generate_key()]).open(token)
    with pytest.raises(SealError):
        Sealer.from_settings(Settings(data_dir=tmp_path, cluster_keys="not-a-fernet-key"))
