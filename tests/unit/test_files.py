"""Files in and out of /box (`cellblock.files`): name checks, decoding, encoding, and safe collection."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from cellblock.errors import ValidationFailed
from cellblock.files import collect_outputs, decode_content, encode_output, validate_relative_path, write_files
from cellblock.models import OutputFile, SourceFile

# ---------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    ["main.py", "src/util.h", "a/b/c/d.txt", "./main.c", "weird name (1).txt", "ünïcödé.txt", "x" * 255,
     "a/" * 300 + "b", ".hidden", "a..b", "..a"],
)  # fmt: skip
def test_valid_names(name: str) -> None:
    validate_relative_path(name, "files[0].name")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "non-empty"),
        ("a\x00b", "NUL"),
        ("/etc/passwd", "absolute"),
        ("/", "absolute"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a/..", "'..'"),
        ("dir/", "end in '/'"),
        (".", "end in '/' or '.'"),
        ("a/.", "end in '/' or '.'"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8: bytes count, not characters
        ("a/" * 512 + "b", "longer than 1024 bytes"),
        ("*.py", "glob"),
        ("main?.c", "glob"),
        ("[ab].c", "glob"),
    ],
)
def test_invalid_names(name: str, problem: str) -> None:
    with pytest.raises(ValidationFailed, match=problem) as info:
        validate_relative_path(name, "files[2].name")
    assert info.value.field == "files[2].name"
    assert info.value.message.startswith("files[2].name ")


def test_globs_only_where_allowed() -> None:
    for pattern in ("*.txt", "out/**/*.csv", "res?.bin", "[a-z].txt"):
        validate_relative_path(pattern, "output_files[0]", allow_glob=True)
    for bad in ("../*", "/tmp/*", "**/../x"):
        with pytest.raises(ValidationFailed) as info:
            validate_relative_path(bad, "output_files[1]", allow_glob=True)
        assert info.value.field == "output_files[1]"


# ---------------------------------------------------------------------------------------------- decoding


def test_decode_utf8_and_base64() -> None:
    assert decode_content(SourceFile(name="a", content="héllo\n"), "f") == "héllo\n".encode()
    raw = bytes(range(256))
    encoded = base64.b64encode(raw).decode()
    assert decode_content(SourceFile(name="a", content=encoded, encoding="base64"), "f") == raw
    assert decode_content(SourceFile(name="a", content="", encoding="base64"), "f") == b""


@pytest.mark.parametrize("content", ["not base64!", "abc", "YWJj\x00", "YW Jj", "YWJj\n", "=YWJj"])
def test_decode_bad_base64(content: str) -> None:
    with pytest.raises(ValidationFailed, match="not valid base64") as info:
        decode_content(SourceFile(name="a", content=content, encoding="base64"), "files[1].content")
    assert info.value.field == "files[1].content"


def test_decode_lone_surrogate_asks_for_base64() -> None:
    # A str with no UTF-8 form (a lone surrogate, e.g. from Python callers of the SDK or engine).
    file = SourceFile(name="a", content="ok \udc80")
    with pytest.raises(ValidationFailed, match="base64") as info:
        decode_content(file, "files[0].content")
    assert info.value.field == "files[0].content"


# ---------------------------------------------------------------------------------------------- encoding


def test_encode_output_text_stays_text() -> None:
    assert encode_output(b"") == ("", "utf8")
    assert encode_output("héllo ✓\n".encode()) == ("héllo ✓\n", "utf8")


@pytest.mark.parametrize("data", [b"\xff\xfe", b"ok\x80", bytes(range(256)), "é".encode()[:1], b"\xed\xa0\x80"])
def test_encode_output_binary_is_base64_and_round_trips(data: bytes) -> None:
    text, encoding = encode_output(data)
    assert encoding == "base64"
    assert base64.b64decode(text, validate=True) == data


# ---------------------------------------------------------------------------------------------- writing


def test_write_files_creates_dirs_and_refuses_links(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    write_files(box, [("main.c", b"int main(){}"), ("inc/a/b.h", b"#pragma once\n")])
    assert (box / "main.c").read_bytes() == b"int main(){}"
    assert (box / "inc/a/b.h").read_bytes() == b"#pragma once\n"
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (box / "evil").symlink_to(outside)
    with pytest.raises(OSError):
        write_files(box, [("evil", b"overwritten")])
    assert outside.read_bytes() == b"keep"
    with pytest.raises(FileExistsError):
        write_files(box, [("main.c", b"again")])


# ---------------------------------------------------------------------------------------------- collecting


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A box after a hostile program: real files, links to outside files and dirs, a FIFO, a link loop."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    (outside / "nested").mkdir()
    (outside / "nested" / "deep.txt").write_text("deep secret")
    box = tmp_path / "box"
    box.mkdir()
    (box / "out.txt").write_text("result")
    (box / "data.bin").write_bytes(b"\x00\xff\x10")
    (box / "sub").mkdir()
    (box / "sub" / "inner.txt").write_text("inner")
    (box / "shadow.txt").symlink_to(outside / "secret.txt")  # a link to a host file
    (box / "rel.txt").symlink_to("../host/secret.txt")  # the same, relative
    (box / "alias.txt").symlink_to("out.txt")  # a link that stays inside the box is not followed either
    (box / "hostdir").symlink_to(outside)  # a linked directory
    (box / "sub" / "up").symlink_to("..")  # a loop
    (box / "dangling.txt").symlink_to(tmp_path / "nope")
    os.mkfifo(box / "pipe.txt")  # opening it for reading must not block
    return box


def names(files: list[OutputFile]) -> list[str]:
    return [f.name for f in files]


def test_collect_returns_only_regular_files_inside(box: Path) -> None:
    files = collect_outputs(box, ["**/*.txt", "*.bin"], 1 << 20)
    assert names(files) == ["data.bin", "out.txt", "sub/inner.txt"]  # sorted by path
    by_name = {f.name: f for f in files}
    assert (by_name["out.txt"].content, by_name["out.txt"].encoding) == ("result", "utf8")
    assert by_name["data.bin"].encoding == "base64"
    assert base64.b64decode(by_name["data.bin"].content) == b"\x00\xff\x10"
    assert all(not f.truncated and f.size == len(f.content) for f in files if f.encoding == "utf8")
    everything = " ".join(f.content for f in files)
    assert "secret" not in everything


def test_collect_never_goes_through_a_linked_directory(box: Path) -> None:
    for pattern in ("hostdir/*", "hostdir/**", "hostdir/nested/deep.txt", "sub/up/out.txt", "sub/up/*"):
        contents = [f.content for f in collect_outputs(box, [pattern], 1 << 20)]
        assert not any("secret" in c for c in contents), pattern
    assert names(collect_outputs(box, ["sub/up/out.txt"], 1 << 20)) == []


def test_collect_skips_links_named_exactly(box: Path) -> None:
    for name in ("shadow.txt", "rel.txt", "alias.txt", "dangling.txt", "pipe.txt", "hostdir"):
        assert collect_outputs(box, [name], 1 << 20) == [], name


def test_collect_skips_directories(box: Path) -> None:
    # A pattern that matches a directory (`sub`, `**`, `out/*` over nested dirs) is normal user input.
    assert collect_outputs(box, ["sub"], 1 << 20) == []


def test_collect_everything_with_double_star(box: Path) -> None:
    files = collect_outputs(box, ["**"], 1 << 20)
    assert names(files) == ["data.bin", "out.txt", "sub/inner.txt"]


def test_collect_total_size_is_capped(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (box / name).write_text(name[0] * 600)
    files = collect_outputs(box, ["*.txt"], 1000)
    assert sum(len(f.content) for f in files) == 1000
    a, b = files[0], files[1]
    assert (a.name, a.content, a.size, a.truncated) == ("a.txt", "a" * 600, 600, False)
    assert (b.name, b.content, b.size, b.truncated) == ("b.txt", "b" * 400, 600, True)
    assert all(f.truncated and f.content == "" for f in files[2:])


def test_collect_each_file_once_across_patterns(box: Path) -> None:
    files = collect_outputs(box, ["out.txt", "*.txt", "o*"], 1 << 20)
    assert names(files) == ["out.txt"]


def test_collect_with_nothing_matching(box: Path) -> None:
    assert collect_outputs(box, ["*.csv"], 1 << 20) == []
    assert collect_outputs(box, [], 1 << 20) == []
