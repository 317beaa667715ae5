"""The options of a squashfs build, shared by both backends (native writer and mksquashfs).

Names follow mksquashfs's options (``-comp`` -> ``comp``, ``-Xbcj`` -> ``Xbcj``,
``-no-fragments`` -> ``no_fragments``) so that users can carry their knowledge over.
:func:`parse_compress_args` turns lorax-style ``--compress-arg`` values into fields.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from liveimg import reproducible
from liveimg.errors import InvalidOptions

#: Compressors by mksquashfs name -> on-disk id (squashfs_fs.h ``ZLIB_COMPRESSION`` ...).
COMPRESSOR_IDS: Mapping[str, int] = {"gzip": 1, "lzo": 3, "xz": 4, "lz4": 5, "zstd": 6}

#: The BCJ filters mksquashfs (and the kernel's xz decoder) know.
BCJ_FILTERS = ("x86", "powerpc", "ia64", "arm", "armthumb", "sparc")

#: How the xz writer picks between a block compressed with and without its BCJ filters:
#: ``heuristic`` guesses from the block's content and tries both only when unsure,
#: ``exhaustive`` always tries every filter chain and keeps the smallest (what mksquashfs does).
BCJ_MODES = ("heuristic", "exhaustive")

#: Default compression levels, as mksquashfs uses them.
DEFAULT_LEVELS: Mapping[str, int] = {"gzip": 9, "zstd": 15, "lzo": 8}
LEVEL_RANGES: Mapping[str, tuple[int, int]] = {"gzip": (1, 9), "zstd": (1, 22), "lzo": (1, 9)}

MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 1 << 20
DEFAULT_BLOCK_SIZE = 128 * 1024

_ARCH_BCJ: Mapping[str, tuple[str, ...]] = {
    "x86_64": ("x86",),
    "amd64": ("x86",),
    "i386": ("x86",),
    "i486": ("x86",),
    "i586": ("x86",),
    "i686": ("x86",),
    "ppc64le": ("powerpc",),
    "ppc64": ("powerpc",),
    "ppc": ("powerpc",),
    "armv7l": ("arm", "armthumb"),
    "armv7hl": ("arm", "armthumb"),
    "armhfp": ("arm", "armthumb"),
    "armv7": ("arm", "armthumb"),
    "sparc": ("sparc",),
    "sparc64": ("sparc",),
    "ia64": ("ia64",),
}


def bcj_for_arch(arch: str) -> tuple[str, ...]:
    """The xz BCJ filters worth trying for code of ``arch`` (``uname -m`` or RPM names).

    Empty when squashfs has none for it: aarch64 (squashfs-tools 4.5 has no arm64 filter),
    s390x, riscv64.
    """
    return _ARCH_BCJ.get(arch, ())


@dataclass(frozen=True)
class SquashfsOptions:
    """How to build a squashfs image.  Immutable; check with :meth:`validate` (done by both backends).

    ``mkfs_time`` defaults to ``$SOURCE_DATE_EPOCH`` when that is set (see :meth:`effective_mkfs_time`).
    ``processors`` is the number of compression workers (None: every CPU).
    """

    comp: str = "xz"
    block_size: int = DEFAULT_BLOCK_SIZE
    Xbcj: tuple[str, ...] = ()
    bcj_mode: str = "heuristic"  # one of BCJ_MODES; the mksquashfs backend always tries every filter
    Xcompression_level: int | None = None
    Xdict_size: int | None = None
    Xhc: bool = False
    no_fragments: bool = False
    always_use_fragments: bool = False
    no_exports: bool = False
    no_xattrs: bool = False
    all_root: bool = False
    force_uid: int | None = None
    force_gid: int | None = None
    mkfs_time: int | None = None
    all_time: int | None = None
    processors: int | None = None

    def __post_init__(self) -> None:
        # Accept a list for Xbcj from callers, keep the dataclass hashable and immutable.
        object.__setattr__(self, "Xbcj", tuple(self.Xbcj))

    @property
    def block_log(self) -> int:
        return self.block_size.bit_length() - 1

    @property
    def compression_level(self) -> int | None:
        """The level in effect (the default for the compressor if none was given)."""
        if self.Xcompression_level is not None:
            return self.Xcompression_level
        return DEFAULT_LEVELS.get(self.comp)

    @property
    def dict_size(self) -> int:
        """The xz dictionary size in effect: the block size unless ``Xdict_size`` says otherwise."""
        return self.Xdict_size if self.Xdict_size is not None else self.block_size

    def effective_mkfs_time(self, now: float | None = None) -> int:
        """``mkfs_time``, else ``$SOURCE_DATE_EPOCH``, else the current time (``now``)."""
        if self.mkfs_time is not None:
            return self.mkfs_time
        sde = source_date_epoch()
        if sde is not None:
            return sde
        return int(time.time() if now is None else now)

    def workers(self) -> int:
        """Number of compression workers: ``processors`` or the CPUs we may run on."""
        if self.processors is not None:
            return self.processors
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return os.cpu_count() or 1

    def replace(self, **changes: Any) -> SquashfsOptions:
        return dataclasses.replace(self, **changes)

    def validate(self) -> SquashfsOptions:
        """Raise :class:`InvalidOptions` naming the first wrong option; return self."""
        if self.comp not in COMPRESSOR_IDS:
            raise InvalidOptions(
                f"unknown squashfs compressor {self.comp!r}", hint=f"choose one of {', '.join(COMPRESSOR_IDS)}"
            )
        bs = self.block_size
        if bs < MIN_BLOCK_SIZE or bs > MAX_BLOCK_SIZE or bs & (bs - 1):
            raise InvalidOptions(f"squashfs block_size {bs} is not a power of two between 4 KiB and 1 MiB")
        if self.Xbcj and self.comp != "xz":
            raise InvalidOptions(f"Xbcj needs comp='xz', not {self.comp!r}")
        for name in self.Xbcj:
            if name not in BCJ_FILTERS:
                raise InvalidOptions(f"unknown xz BCJ filter {name!r}", hint=f"choose from {', '.join(BCJ_FILTERS)}")
        if self.bcj_mode not in BCJ_MODES:
            raise InvalidOptions(f"unknown xz BCJ mode {self.bcj_mode!r}", hint=f"choose one of {', '.join(BCJ_MODES)}")
        if len(set(self.Xbcj)) != len(self.Xbcj):
            raise InvalidOptions(f"Xbcj lists a filter twice: {','.join(self.Xbcj)}")
        if self.Xcompression_level is not None:
            if self.comp not in LEVEL_RANGES:
                raise InvalidOptions(f"compressor {self.comp} has no compression level")
            low, high = LEVEL_RANGES[self.comp]
            if not low <= self.Xcompression_level <= high:
                raise InvalidOptions(
                    f"{self.comp} Xcompression_level {self.Xcompression_level} is outside {low}..{high}"
                )
        if self.Xdict_size is not None:
            if self.comp != "xz":
                raise InvalidOptions(f"Xdict_size needs comp='xz', not {self.comp!r}")
            if not _valid_dict_size(self.Xdict_size) or not 8192 <= self.Xdict_size <= bs:
                raise InvalidOptions(
                    f"xz Xdict_size {self.Xdict_size} must be 2^n or 2^n+2^(n+1), at least 8192 and at most "
                    f"the block size {bs}"
                )
        if self.Xhc and self.comp != "lz4":
            raise InvalidOptions(f"Xhc needs comp='lz4', not {self.comp!r}")
        if self.no_fragments and self.always_use_fragments:
            raise InvalidOptions("no_fragments and always_use_fragments contradict each other")
        for name in ("force_uid", "force_gid"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1 << 32:
                raise InvalidOptions(f"{name} {value} is not a 32-bit id")
        if self.all_root and (self.force_uid is not None or self.force_gid is not None):
            raise InvalidOptions("all_root contradicts force_uid/force_gid")
        for name in ("mkfs_time", "all_time"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1 << 32:
                raise InvalidOptions(f"{name} {value} is not an unsigned 32-bit time")
        if self.processors is not None and self.processors < 1:
            raise InvalidOptions(f"processors must be at least 1, not {self.processors}")
        return self


def _valid_dict_size(size: int) -> bool:
    # The xz header stores 2^n or 2^n + 2^(n-1); mksquashfs and the kernel check the same.
    if size <= 0:
        return False
    low = size & -size
    rest = size - low
    return rest == 0 or rest == low << 1


def source_date_epoch() -> int | None:
    """``$SOURCE_DATE_EPOCH`` as an int, None when unset; :class:`InvalidOptions` when malformed."""
    return reproducible.source_date_epoch(what="squashfs's 32-bit times")


def _size_arg(text: str, block_size: int) -> int:
    text = text.strip()
    try:
        if text.endswith("%"):
            return int(block_size * float(text[:-1]) / 100)
        mult = {"k": 1024, "m": 1 << 20}.get(text[-1:].lower(), 1)
        return int(text[:-1] if mult != 1 else text) * mult
    except ValueError:
        raise InvalidOptions(f"bad size {text!r} in compressor arguments") from None


def parse_compress_args(args: Iterable[str], base: SquashfsOptions | None = None) -> SquashfsOptions:
    """Apply lorax-style ``--compress-arg`` values to ``base`` (default options).

    Each value is split on its first space into an option and its argument, the way lorax
    passes them to mksquashfs: ``"-Xbcj x86"``, ``"-Xcompression-level 19"``, ``"-Xhc"``,
    ``"-Xdict-size 100%"``, ``"-b 1M"``.  Unknown options are an :class:`InvalidOptions`.
    """
    opts = base or SquashfsOptions()
    changes: dict[str, Any] = {}
    for raw in args:
        name, _, value = raw.strip().partition(" ")
        value = value.strip()

        def need_value(name: str = name, value: str = value) -> str:
            if not value:
                raise InvalidOptions(f"compressor argument {name} needs a value")
            return value

        if name == "-Xbcj":
            changes["Xbcj"] = tuple(v for v in need_value().split(",") if v)
        elif name == "-Xcompression-level":
            try:
                changes["Xcompression_level"] = int(need_value())
            except ValueError:
                raise InvalidOptions(f"-Xcompression-level {value!r} is not an integer") from None
        elif name == "-Xdict-size":
            changes["Xdict_size"] = _size_arg(need_value(), changes.get("block_size", opts.block_size))
        elif name == "-Xhc":
            changes["Xhc"] = True
        elif name == "-b":
            changes["block_size"] = _size_arg(need_value(), opts.block_size)
        elif name == "-comp":
            changes["comp"] = need_value()
        else:
            raise InvalidOptions(
                f"unsupported compressor argument {raw.strip()!r}",
                hint="supported: -Xbcj, -Xcompression-level, -Xdict-size, -Xhc, -b, -comp",
            )
    return opts.replace(**changes).validate()


@dataclass(frozen=True)
class SquashfsResult:
    """What a finished build left: the image, its size, the options used and the time it took."""

    path: os.PathLike[str] | str
    size: int
    seconds: float
    backend: str
    options: SquashfsOptions
    inodes: int = 0
    stats: Mapping[str, int] = dataclasses.field(default_factory=dict)


clamp_to_epoch = reproducible.clamp_to_epoch
