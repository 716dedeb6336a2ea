"""The /etc a program sees (`cellblock.sandbox.etcdir`): prepared once per content, atomically, on disk.

Pure file work on a tmp dir (no root needed). Where a test needs host content it does not control (the loader
cache, alternatives), it either compares with the host's own files or points the module at a tmp copy.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cellblock.sandbox import etcdir
from cellblock.sandbox.bwrap import ETC_NAMES
from cellblock.sandbox.etcdir import generated_files, prepare_etc

HOST_ALTERNATIVES = Path("/etc/alternatives")


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_generated_files_name_one_unprivileged_user() -> None:
    files = {name: data.decode() for name, data in generated_files().items()}
    assert set(files) == {"passwd", "group", "hosts", "nsswitch.conf"}
    passwd = files["passwd"].splitlines()
    assert "runner:x:1000:1000:runner:/box:/bin/sh" in passwd
    assert not any(line.split(":")[2] == "0" for line in passwd)  # no root user inside the box
    assert all(len(line.split(":")) == 7 for line in passwd)
    group = files["group"].splitlines()
    assert "runner:x:1000:" in group
    assert not any(line.split(":")[2] == "0" for line in group)
    assert "127.0.0.1 localhost box" in files["hosts"].splitlines()
    # Names resolve from our files only: no ldap/sss/systemd module the box cannot reach.
    nss = dict(line.split(":", 1) for line in files["nsswitch.conf"].splitlines())
    assert nss["passwd"].split() == ["files"] and nss["group"].split() == ["files"]


def test_prepared_dir_holds_exactly_what_the_box_links_to(tmp_path: Path) -> None:
    etc = prepare_etc(tmp_path)
    assert etc.parent == tmp_path and etc.name.startswith("etc-")
    # bwrap links /etc/<name> -> <mount>/<name> for every ETC_NAMES entry: each must exist, nothing else.
    assert entries(etc) == sorted(ETC_NAMES)
    for name, data in generated_files().items():
        assert (etc / name).read_bytes() == data, name
    # Readable by the box's user (the dir is bound read-only; files must be world-readable, not writable).
    assert stat.S_IMODE(etc.stat().st_mode) == 0o755
    for name in ETC_NAMES:
        path = etc / name
        if not path.is_symlink() and path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, name
    assert entries(tmp_path) == [etc.name]  # no temp dir left behind


def test_host_files_are_copied_not_linked(tmp_path: Path) -> None:
    etc = prepare_etc(tmp_path)
    for name in ("ld.so.cache", "localtime"):
        copy = etc / name
        assert not copy.is_symlink(), name  # host /etc/localtime is a link into /usr/share/zoneinfo
        assert copy.is_file(), name
        assert copy.read_bytes() == (Path("/etc") / name).read_bytes(), name


def test_alternatives_are_symlinks_with_the_hosts_targets(tmp_path: Path) -> None:
    etc = prepare_etc(tmp_path)
    host = {p.name: os.readlink(p) for p in HOST_ALTERNATIVES.iterdir() if p.is_symlink()}
    assert host, "this host has alternatives (java, editors…): the check below must see some"
    ours = etc / "alternatives"
    assert ours.is_dir() and not ours.is_symlink()
    assert {p.name: os.readlink(p) for p in ours.iterdir()} == host
    assert all((ours / name).is_symlink() for name in host)
    # Plain files there (Debian's README) are not alternatives and are not copied.
    assert not any((ours / p.name).exists() for p in HOST_ALTERNATIVES.iterdir() if not p.is_symlink())


def test_same_content_same_dir(tmp_path: Path) -> None:
    first = prepare_etc(tmp_path)
    before = {p.name: p.lstat().st_ino for p in first.iterdir()}
    second = prepare_etc(tmp_path)
    assert second == first
    assert {p.name: p.lstat().st_ino for p in second.iterdir()} == before  # not rewritten
    assert entries(tmp_path) == [first.name]


def fake_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Point the module at a host /etc we control: (its localtime file, its alternatives dir)."""
    host = tmp_path / "host"
    (host / "alternatives").mkdir(parents=True)
    localtime = host / "localtime"
    localtime.write_bytes(b"TZif zone A")
    os.symlink("/usr/bin/tool-1", host / "alternatives" / "tool")
    (host / "alternatives" / "README").write_text("not a link")
    monkeypatch.setattr(etcdir, "HOST_FILES", (str(localtime),))
    monkeypatch.setattr(etcdir, "HOST_ALTERNATIVES", host / "alternatives")
    return localtime, host / "alternatives"


def test_new_content_gets_a_new_dir_and_the_old_one_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    localtime, alternatives = fake_host(tmp_path, monkeypatch)
    shared = tmp_path / "shared"
    shared.mkdir()
    first = prepare_etc(shared)
    assert entries(first) == sorted([*generated_files(), "localtime", "alternatives"])
    assert os.readlink(first / "alternatives" / "tool") == "/usr/bin/tool-1"
    assert not (first / "alternatives" / "README").exists()

    (alternatives / "tool").unlink()
    os.symlink("/usr/bin/tool-2", alternatives / "tool")  # `update-alternatives` switched the tool
    second = prepare_etc(shared)
    assert second != first
    assert os.readlink(second / "alternatives" / "tool") == "/usr/bin/tool-2"
    assert os.readlink(first / "alternatives" / "tool") == "/usr/bin/tool-1"  # a running worker's dir is untouched

    localtime.write_bytes(b"TZif zone B")
    third = prepare_etc(shared)
    assert third not in (first, second)
    assert (third / "localtime").read_bytes() == b"TZif zone B"
    assert (first / "localtime").read_bytes() == b"TZif zone A"
    assert entries(shared) == sorted(p.name for p in (first, second, third))


# ---------------------------------------------------------------------------------------------- concurrency


def force_a_race(monkeypatch: pytest.MonkeyPatch, wait: Callable[[], object]) -> None:
    """Every caller builds its own temp dir, then waits for the others before renaming: all pass the
    "already there?" check first, so all but one must lose the rename and clean up after themselves."""
    real = tempfile.mkdtemp

    def mkdtemp_then_wait(*args: object, **kwargs: object) -> str:
        path = real(*args, **kwargs)  # type: ignore[call-overload]
        wait()
        return str(path)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp_then_wait)


def test_concurrent_threads_agree_on_one_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = 6
    barrier = threading.Barrier(count, timeout=30)
    force_a_race(monkeypatch, barrier.wait)
    results: list[Path] = []
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            results.append(prepare_etc(tmp_path))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(results) == count and len(set(results)) == 1
    assert entries(tmp_path) == [results[0].name]  # the losers removed their temp dirs
    assert entries(results[0]) == sorted(ETC_NAMES)
    assert (results[0] / "passwd").read_bytes() == generated_files()["passwd"]


def _prepare_in_child(shared: Path, out: mp.SimpleQueue[str]) -> None:
    out.put(str(prepare_etc(shared)))


def test_concurrent_processes_agree_on_one_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count = 4
    ctx = mp.get_context("fork")  # the children inherit the patched mkdtemp and the barrier
    barrier = ctx.Barrier(count, timeout=30)
    force_a_race(monkeypatch, barrier.wait)
    out: mp.SimpleQueue[str] = ctx.SimpleQueue()
    procs = [ctx.Process(target=_prepare_in_child, args=(tmp_path, out)) for _ in range(count)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0] * count
    results = {out.get() for _ in range(count)}
    assert len(results) == 1
    final = Path(results.pop())
    assert entries(tmp_path) == [final.name]
    assert entries(final) == sorted(ETC_NAMES)
