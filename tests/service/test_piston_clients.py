"""Real Piston clients, unchanged, pointed at our base URL (issue 5, item 3): `pistonapi` (form bodies),
`ultra-piston` (httpx, JSON), `piston-rspy` (Rust reqwest, JSON) from PyPI, and npm's `piston-client`
(node-fetch, text/plain JSON) run as a real `node` process from tests/clients (installed by scripts/setup)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import Service

pytestmark = pytest.mark.sandbox

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
ECHO = "import sys\nprint(input(), sys.argv[1:])"
C_SOURCE = '#include <stdio.h>\nint main(void){puts("compiled");return 0;}'


@pytest.fixture(scope="module")
def svc(service: Service) -> Service:
    """The shared module service (conftest: Redis, a 2-slot worker, webhooks, the API)."""
    return service


def python_version(svc: Service) -> str:
    with svc.client() as api:
        version: str = next(rt["version"] for rt in api.get("/api/v2/runtimes").json() if rt["language"] == "python")
    return version


def test_pistonapi(svc: Service) -> None:
    from pistonapi import PistonAPI
    from pistonapi.exceptions import PistonError

    client = PistonAPI(endpoint=f"{svc.base_url}/api/v2")
    runtimes = client.runtimes
    assert runtimes["python"]["version"] == python_version(svc) and "py" in runtimes["python"]["aliases"]
    assert "c++" in runtimes and client.languages == runtimes
    assert client.execute("python", "3.x", ECHO, stdin="hi", args=["a", "b"]) == "hi ['a', 'b']\n"
    assert client.execute("py", "*", "print('no args')") == "no args\n"  # an empty args list is not sent at all
    with pytest.raises(PistonError, match="cobol-1 runtime is unknown"):
        client.execute("cobol", "1", "x")


def test_ultra_piston_sync_and_async(svc: Service) -> None:
    from ultra_piston import File, PistonClient
    from ultra_piston.errors import BadRequestError

    client = PistonClient(base_url=f"{svc.base_url}/api/v2/", rate_limit=0)
    runtimes = client.get_runtimes()
    assert any(rt.language == "python" and rt.version == python_version(svc) for rt in runtimes)
    out = client.post_execute("python", "3", File(content=ECHO), stdin="hi", args=["x"])
    assert (out.language, out.run.stdout, out.run.code, out.compile) == ("python", "hi ['x']\n", 0, None)
    compiled = client.post_execute("c", "*", File(name="main.c", content=C_SOURCE), run_memory_limit=128_000_000)
    assert compiled.compile is not None and compiled.compile.code == 0 and compiled.run.output == "compiled\n"
    failed = client.post_execute("python", "*", File(content="import sys\nsys.exit(4)"))
    assert failed.run.code == 4
    with pytest.raises(BadRequestError):
        client.post_execute("python", "9.x", File(content="print(1)"))

    async def go() -> Any:
        return await client.post_execute_async("javascript", "*", File(content="console.log(6 * 7)"))

    assert asyncio.run(go()).run.stdout == "42\n"


def test_piston_rspy(svc: Service) -> None:
    import piston_rspy

    client = piston_rspy.Client.with_url(f"{svc.base_url}/api/v2")

    async def go() -> tuple[Any, Any, Any, Any]:
        runtimes = await client.fetch_runtimes()
        echo = [piston_rspy.File(content=ECHO)]
        run = await client.execute(piston_rspy.Executor(language="python", version="3.x", stdin="hi", args=["a"],
                                                        files=echo))  # fmt: skip
        compiled = await client.execute(piston_rspy.Executor(
            language="c++", files=[piston_rspy.File(name="m.cpp", content="int main(){return 5;}")]))  # fmt: skip
        unknown = await client.execute(
            piston_rspy.Executor(language="swift", files=[piston_rspy.File(content="x")]))  # fmt: skip
        return runtimes, run, compiled, unknown

    runtimes, run, compiled, unknown = asyncio.run(go())
    assert any(rt.language == "python" and rt.version == python_version(svc) for rt in runtimes)
    assert run.is_ok() and run.language == "python" and run.run.stdout == "hi ['a']\n" and run.run.is_ok()
    assert compiled.compile is not None and compiled.compile.code == 0 and compiled.run.code == 5
    assert unknown.status == 400 and unknown.is_err()


def test_npm_piston_client(svc: Service) -> None:
    node = shutil.which("node")
    assert node is not None, "node is missing: scripts/setup installs it (npm's piston-client needs it)"
    assert (CLIENTS / "node_modules" / "piston-client").is_dir(), "run scripts/setup (npm ci in tests/clients)"
    done = subprocess.run([node, "piston_client.mjs", svc.base_url], cwd=CLIENTS, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert any(rt["language"] == "python" and rt["version"] == python_version(svc) for rt in got["runtimes"])
    assert got["hello"]["run"]["stdout"] == "hi ['a']\n" and got["hello"]["version"] == python_version(svc)
    # its default args are ["1", "2", "3"]: argc is 4
    assert got["compiled"]["compile"]["code"] == 0 and got["compiled"]["run"]["stdout"] == "4\n"
    assert got["compiled"]["run"]["code"] == 2 and got["compiled"]["run"]["status"] == "RE"
    assert got["unknown"] == {"message": "version is required as a string"}  # no runtime to take a version from
