from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveimg.errors import InvalidOptions
from liveimg.squashfs.compressor import (
    REGISTRY,
    XzCompressor,
    has_x86_branch_opcode,
    make_compressor,
    x86_code_score,
)
from liveimg.squashfs.options import SquashfsOptions


def test_x86_score_separates_code_from_text() -> None:
    code = Path("/usr/bin/python3").resolve().read_bytes()
    block = code[len(code) // 3 : len(code) // 3 + 131072]  # inside .text
    score, zeros = x86_code_score(block)
    assert score > XzCompressor.HIGH and zeros < XzCompressor.ZERO_MAX
    text = (b"The quick brown fox jumps over the lazy dog. " * 3000)[:131072]
    assert x86_code_score(text)[0] < XzCompressor.LOW
    assert x86_code_score(os.urandom(131072))[0] < XzCompressor.LOW
    unrelocated = (b"\x55\x48\x89\xe5\xe8\x00\x00\x00\x00\x5d\xc3" * 12000)[:131072]
    assert x86_code_score(unrelocated)[1] > 0.9


def test_xz_chooses_filters_by_content() -> None:
    xz = XzCompressor(SquashfsOptions(comp="xz", Xbcj=("x86",)))
    code = Path("/usr/bin/python3").resolve().read_bytes()
    block = code[len(code) // 3 : len(code) // 3 + 131072]
    assert xz.candidates(block) == [xz._bcj[0]]
    assert xz.candidates(b"text " * 26000) == [xz._plain]
    arm = XzCompressor(SquashfsOptions(comp="xz", Xbcj=("arm", "armthumb")))
    assert len(arm.candidates(block)) == 3  # no guess for other architectures: try all, like mksquashfs


@pytest.mark.parametrize("comp", ["gzip", "xz", "zstd", "lz4"])
def test_round_trip_and_incompressible(comp: str) -> None:
    c = make_compressor(SquashfsOptions(comp=comp, block_size=65536))
    data = b"squashfs " * 7000
    packed = c.compress(data)
    assert packed is not None and len(packed) < len(data)
    assert c.decompress(packed, 65536) == data
    assert c.compress(os.urandom(65536)) is None  # does not shrink: stored as is
    assert REGISTRY[c.id] is type(c)


def test_options_blocks() -> None:
    assert make_compressor(SquashfsOptions(comp="gzip")).options_bytes() is None
    assert make_compressor(SquashfsOptions(comp="gzip", Xcompression_level=1)).options_bytes() == (
        b"\x01\x00\x00\x00\x0f\x00\x00\x00"
    )
    assert make_compressor(SquashfsOptions(comp="xz")).options_bytes() is None
    xz = make_compressor(SquashfsOptions(comp="xz", Xbcj=("x86", "arm")))
    assert xz.options_bytes() == (131072).to_bytes(4, "little") + (1 | 8).to_bytes(4, "little")
    assert make_compressor(SquashfsOptions(comp="lz4")).options_bytes() == b"\x01\0\0\0\0\0\0\0"
    assert make_compressor(SquashfsOptions(comp="zstd", Xcompression_level=3)).options_bytes() == b"\x03\0\0\0"


def test_missing_optional_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lzo", None)  # makes "import lzo" fail
    with pytest.raises(
        InvalidOptions, match=r"the lzo module is needed for this squashfs compressor \(pip install python-lzo"
    ):
        make_compressor(SquashfsOptions(comp="lzo"))


def test_exhaustive_bcj_tries_every_chain() -> None:
    opts = SquashfsOptions(comp="xz", Xbcj=("x86",))
    heuristic, exhaustive = XzCompressor(opts), XzCompressor(opts.replace(bcj_mode="exhaustive"))
    text = b"caf\xe9 text " * 12000  # Latin-1: an E9 byte, which the x86 filter looks at
    assert heuristic.candidates(text) == [heuristic._plain]
    assert exhaustive.candidates(text) == [exhaustive._plain, exhaustive._bcj[0]]
    # The mode changes the output, so it is part of the settings a block cache keys on.
    assert heuristic.settings != exhaustive.settings
    assert (
        make_compressor(SquashfsOptions(comp="zstd", Xcompression_level=3)).settings
        != make_compressor(SquashfsOptions(comp="zstd")).settings
    )
    with pytest.raises(InvalidOptions, match="unknown xz BCJ mode 'always'"):
        SquashfsOptions(comp="xz", bcj_mode="always").validate()


def _both_ways(xz: XzCompressor, block: bytes) -> bytes:
    """What trying both chains keeps (mksquashfs: the smallest, the plain one first among equals)."""
    return min((xz._xz(block, chain) for chain in (xz._plain, xz._bcj[0])), key=len)


def _stdlib_text() -> bytes:
    text = b"".join(p.read_bytes() for p in sorted(Path(os.__file__).parent.glob("[a-c]*.py")))
    return text.replace(b"\xe8", b"").replace(b"\xe9", b"")


def test_exhaustive_skips_the_filter_only_where_it_changes_nothing() -> None:
    exhaustive = XzCompressor(SquashfsOptions(comp="xz", Xbcj=("x86",), bcj_mode="exhaustive"))
    text = _stdlib_text()[:131072]
    assert not has_x86_branch_opcode(text) and not has_x86_branch_opcode(memoryview(text))
    assert exhaustive.candidates(text) == [exhaustive._plain]
    assert exhaustive.compress(text) == _both_ways(exhaustive, text)
    code = Path("/usr/bin/python3").resolve().read_bytes()
    block = code[len(code) // 3 : len(code) // 3 + 131072]
    assert has_x86_branch_opcode(block) and len(exhaustive.candidates(block)) == 2
    # Other filters look at other opcodes: every chain is tried.
    arm = XzCompressor(SquashfsOptions(comp="xz", Xbcj=("arm",), bcj_mode="exhaustive"))
    assert len(arm.candidates(text)) == 2


_NO_BRANCH = st.binary(min_size=1, max_size=4096).map(lambda b: b.replace(b"\xe8", b"").replace(b"\xe9", b""))


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(_NO_BRANCH, min_size=1, max_size=40), repeat=st.integers(1, 8))
def test_without_e8_or_e9_the_x86_chain_is_never_smaller(pieces: list[bytes], repeat: int) -> None:
    """The shortcut's premise: on such a block the filtered stream is as long as the plain one or
    longer, so trying both would keep the plain stream."""
    xz = XzCompressor(SquashfsOptions(comp="xz", Xbcj=("x86",), bcj_mode="exhaustive"))
    block = (b"".join(pieces) * repeat)[:131072]
    if not block:
        return
    plain, filtered = xz._xz(block, xz._plain), xz._xz(block, xz._bcj[0])
    assert len(filtered) >= len(plain)
    assert xz.compress(block) == (_both_ways(xz, block) if len(plain) < len(block) else None)
