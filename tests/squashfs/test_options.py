from __future__ import annotations

import pytest

from liveimg.errors import InvalidOptions
from liveimg.squashfs.options import SquashfsOptions, bcj_for_arch, parse_compress_args


def test_defaults_are_valid() -> None:
    opts = SquashfsOptions().validate()
    assert opts.comp == "xz"
    assert opts.block_size == 131072
    assert opts.block_log == 17
    assert opts.dict_size == 131072


@pytest.mark.parametrize(
    ("arch", "filters"),
    [
        ("x86_64", ("x86",)),
        ("i686", ("x86",)),
        ("ppc64le", ("powerpc",)),
        ("ppc64", ("powerpc",)),
        ("aarch64", ()),
        ("armv7hl", ("arm", "armthumb")),
        ("sparc64", ("sparc",)),
        ("ia64", ("ia64",)),
        ("s390x", ()),
    ],
)
def test_bcj_for_arch(arch: str, filters: tuple[str, ...]) -> None:
    assert bcj_for_arch(arch) == filters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"comp": "brotli"}, "unknown squashfs compressor 'brotli'"),
        ({"block_size": 3000}, "squashfs block_size 3000 is not a power of two between 4 KiB and 1 MiB"),
        ({"block_size": 2 << 20}, "is not a power of two between 4 KiB and 1 MiB"),
        ({"comp": "gzip", "Xbcj": ("x86",)}, "Xbcj needs comp='xz', not 'gzip'"),
        ({"Xbcj": ("arm64",)}, "unknown xz BCJ filter 'arm64'"),
        ({"comp": "gzip", "Xcompression_level": 10}, "gzip Xcompression_level 10 is outside 1..9"),
        ({"comp": "lz4", "Xcompression_level": 3}, "compressor lz4 has no compression level"),
        ({"Xdict_size": 100000}, "xz Xdict_size 100000 must be 2^n or 2^n+2^(n+1)"),
        ({"comp": "zstd", "Xhc": True}, "Xhc needs comp='lz4'"),
        ({"no_fragments": True, "always_use_fragments": True}, "contradict"),
        ({"processors": 0}, "processors must be at least 1"),
        ({"mkfs_time": -1}, "mkfs_time -1 is not an unsigned 32-bit time"),
    ],
)
def test_validate_names_the_bad_option(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOptions) as excinfo:
        SquashfsOptions(**kwargs).validate()  # type: ignore[arg-type]
    assert message in str(excinfo.value)


def test_dict_sizes_storable_in_the_xz_header() -> None:
    for size in (8192, 12288, 65536, 98304, 131072):
        SquashfsOptions(Xdict_size=size).validate()


def test_parse_compress_args_lorax_style() -> None:
    opts = parse_compress_args(["-Xbcj x86", "-Xdict-size 50%"])
    assert opts.Xbcj == ("x86",)
    assert opts.Xdict_size == 65536
    opts = parse_compress_args(["-Xcompression-level 19"], SquashfsOptions(comp="zstd"))
    assert opts.Xcompression_level == 19
    opts = parse_compress_args(["-Xhc", "-b 1M"], SquashfsOptions(comp="lz4"))
    assert opts.Xhc and opts.block_size == 1 << 20


def test_parse_compress_args_rejects_unknown() -> None:
    with pytest.raises(InvalidOptions, match="unsupported compressor argument '-Xstrategy default'"):
        parse_compress_args(["-Xstrategy default"], SquashfsOptions(comp="gzip"))
    with pytest.raises(InvalidOptions, match="-Xbcj needs a value"):
        parse_compress_args(["-Xbcj"])


def test_mkfs_time_from_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    assert SquashfsOptions().effective_mkfs_time() == 1234
    assert SquashfsOptions(mkfs_time=7).effective_mkfs_time() == 7
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(InvalidOptions, match="SOURCE_DATE_EPOCH='soon' is not a whole number of seconds"):
        SquashfsOptions().effective_mkfs_time()
