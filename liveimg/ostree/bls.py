"""Boot Loader Specification entries as ostree writes and reads them.

Where they are: the boot filesystem (the ``/boot`` partition, or ``/boot`` of the physical root)
holds ``loader -> loader.N`` (N, the *bootversion*, is 0 or 1; ostree flips it atomically on
every deployment change) and ``loader.N/entries/*.conf``.  Some systems have a plain ``loader/``
directory instead; without any ``loader`` ostree assumes bootversion 0.

Entry format (one per file)::

    title Fedora Linux 40 (ostree:0)
    version 2
    options root=UUID=... rw ostree=/ostree/boot.1/fedora/<bootcsum>/0
    linux /ostree/fedora-<bootcsum>/vmlinuz-6.8.5-301.fc40.x86_64
    initrd /ostree/fedora-<bootcsum>/initramfs-6.8.5-301.fc40.x86_64.img

A line is ``key`` + space or tab + value; lines that do not start with a letter are ignored.
``initrd`` may repeat (ostree's "overlay initrds"); ``options`` may repeat and, as the
specification says, the lines add up.  ``linux``/``initrd`` are paths in the boot filesystem.

Order, which decides the default deployment: ostree's ``compare_boot_loader_configs`` sorts by
the ``version`` key with glibc's ``strverscmp``, highest first, entries without a version last;
ostree writes ``version = n_deployments - index`` so the default (index 0) has the highest.
Ties (which ostree never writes) are broken by the file name the same way, as grub's BLS
support sorts by file name.  ostree itself reads only ``ostree-*.conf`` files; entries of
other software in the same directory (a classic kernel, a rescue entry) have no ``ostree=``
argument and are left out of the deployment list.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from liveimg.errors import InvalidImage
from liveimg.fsview import FileType, GuestTree

log = logging.getLogger(__name__)

#: Largest BLS entry file accepted (ostree's are a few hundred bytes).
ENTRY_LIMIT = 64 * 1024
#: Most files accepted in ``loader/entries``.
ENTRIES_LIMIT = 1024


def _digit(c: str) -> bool:
    return "0" <= c <= "9"


def strverscmp(a: str, b: str) -> int:
    """Compare two version strings as glibc's ``strverscmp(3)``: <0, 0 or >0.

    Digit runs compare numerically, except that a run with leading zeros is a fraction
    (``"1.010" < "1.09"``) and sorts before plain integers, exactly as glibc does.
    """
    # glibc's state machine: states N (normal), I (integer), F (fraction), Z (leading zeros).
    s_n, s_i, s_f, s_z = 0, 3, 6, 9
    cmp, length = 2, 3
    next_state = (
        s_n, s_i, s_z,
        s_n, s_i, s_i,
        s_n, s_f, s_f,
        s_n, s_f, s_z,
    )  # fmt: skip
    result_type = (
        cmp, cmp, cmp, cmp, length, cmp, cmp, cmp, cmp,
        cmp, -1, -1, +1, length, length, +1, length, length,
        cmp, cmp, cmp, cmp, cmp, cmp, cmp, cmp, cmp,
        cmp, +1, +1, -1, cmp, cmp, -1, cmp, cmp,
    )  # fmt: skip
    p1 = a.encode("utf-8", "surrogateescape") + b"\0"
    p2 = b.encode("utf-8", "surrogateescape") + b"\0"

    def cls(c: int) -> int:
        return (c == 0x30) + (0x30 <= c <= 0x39)

    i = 0
    c1, c2 = p1[0], p2[0]
    state = s_n + cls(c1)
    while c1 == c2:
        if c1 == 0:
            return 0
        state = next_state[state]
        i += 1
        c1, c2 = p1[i], p2[i]
        state += cls(c1)
    diff = c1 - c2
    result = result_type[state * 3 + cls(c2)]
    if result == cmp:
        return diff
    if result == length:
        j = i + 1
        while 0x30 <= p1[j] <= 0x39:
            if not 0x30 <= p2[j] <= 0x39:
                return 1
            j += 1
        return -1 if 0x30 <= p2[j] <= 0x39 else diff
    return result


#: What the kernel's ``isspace()`` takes for a blank, in ASCII (it also counts byte 0xA0, which
#: UTF-8 text only has inside a character: liveimg refuses non-ASCII arguments anyway).
KERNEL_BLANKS = " \t\n\v\f\r"


def split_kernel_args(line: str) -> tuple[str, ...]:
    """Split a kernel command line as the kernel does: on blanks outside double quotes
    (``a="x y"`` is one argument; a ``"`` toggles quoting wherever it is).

    The arguments are returned as written, quotes kept; they are guest text, checked by
    :mod:`liveimg.bootsyntax` before they go into any boot configuration.
    """
    args: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch in KERNEL_BLANKS and not quoted:
            if current:
                args.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        args.append("".join(current))
    return tuple(args)


@dataclass(frozen=True)
class BootEntry:
    """One BLS entry file.

    ``path`` is its guest path in the merged view (``/boot/loader.1/entries/ostree-2-fedora.conf``);
    ``linux`` and ``initrd`` are as written (paths in the boot filesystem); ``options`` is the
    command line split into arguments; ``fields`` holds every key's last value.
    """

    path: str
    title: str | None
    version: str | None
    linux: str | None
    initrd: tuple[str, ...]
    options: tuple[str, ...]
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def filename(self) -> str:
        return posixpath.basename(self.path)

    def option_values(self, key: str) -> list[str]:
        """Values of every ``key=value`` argument, in order."""
        prefix = key + "="
        return [opt[len(prefix) :] for opt in self.options if opt.startswith(prefix)]

    @property
    def ostree_arg(self) -> str | None:
        """The value of ``ostree=`` (``/ostree/boot.N/<os>/<bootcsum>/<serial>``), if any."""
        values = self.option_values("ostree")
        return values[0] if values else None


def parse_entry(text: str, path: str) -> BootEntry:
    """Parse a BLS entry the way ostree's ``OstreeBootconfigParser`` does."""
    fields: dict[str, str] = {}
    initrds: list[str] = []
    options: list[str] = []
    for line in text.split("\n"):
        if not line[:1].isascii() or not line[:1].isalpha():
            continue
        match = re.match(r"([^ \t]+)[ \t]+(.*)", line.rstrip("\r"))
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key == "initrd":
            initrds.append(value)
        elif key == "options":
            options.extend(split_kernel_args(value))
        fields[key] = value
    return BootEntry(
        path=path,
        # Only shown (liveimg inspect, logs): a control character or terminal escape is dropped.
        title="".join(c for c in fields["title"] if c.isprintable()) if "title" in fields else None,
        version=fields.get("version"),
        linux=fields.get("linux"),
        initrd=tuple(initrds),
        options=tuple(options),
        fields=MappingProxyType(fields),
    )


def _compare_entries(a: BootEntry, b: BootEntry) -> int:
    if a.version is not None and b.version is not None:
        r = strverscmp(a.version, b.version)
        if r:
            return -r
    elif a.version is not None:
        return -1
    elif b.version is not None:
        return 1
    return -strverscmp(a.filename, b.filename)


def sort_entries(entries: Iterable[BootEntry]) -> list[BootEntry]:
    """Entries in boot order: the first is what ostree (and grub) boot by default."""
    return sorted(entries, key=functools.cmp_to_key(_compare_entries))


@dataclass(frozen=True)
class LoaderDir:
    """Where the current BLS entries are.

    ``path`` is the resolved loader directory (``/boot/loader.1``); ``bootversion`` is N of
    ``loader -> loader.N``, or None for a plain ``loader/`` directory; ``link`` tells whether
    ``loader`` was a symlink (ostree's atomic swap).
    """

    path: str
    bootversion: int | None
    link: bool

    @property
    def entries(self) -> str:
        return posixpath.join(self.path, "entries")


_LOADER_N = re.compile(r"loader\.([0-9]+)")


def find_loader(tree: GuestTree, boot: str = "/boot") -> tuple[LoaderDir | None, list[str]]:
    """Find the live loader directory under ``boot``; also return warnings about oddities.

    ``loader`` (symlink or directory) wins; without it, a single ``loader.N`` is used, and with
    both ``loader.0`` and ``loader.1`` ostree's rule applies: no ``loader`` link means bootversion 0.
    """
    warnings: list[str] = []
    loader = posixpath.join(boot, "loader")
    st = tree.stat(loader, follow=False)
    if st is not None and st.type is FileType.SYMLINK:
        target = tree.readlink(loader)
        resolved = tree.resolve(loader)
        if resolved is None or not tree.is_dir(resolved):
            warnings.append(f"{loader} -> {target} is a dangling symlink")
        else:
            m = _LOADER_N.fullmatch(posixpath.basename(resolved))
            if not m:
                warnings.append(f"{loader} -> {target}: ostree links loader to loader.0 or loader.1")
            return LoaderDir(resolved, int(m.group(1)) if m else None, True), warnings
    elif st is not None and st.type is FileType.DIR:
        return LoaderDir(tree.resolve(loader) or loader, None, False), warnings
    candidates = [
        (int(m.group(1)), name)
        for name in tree.listdir(boot)
        if (m := _LOADER_N.fullmatch(name)) and tree.is_dir(posixpath.join(boot, name))
    ]
    if not candidates:
        return None, warnings
    candidates.sort()
    if len(candidates) > 1:
        names = ", ".join(n for _, n in candidates)
        warnings.append(f"{boot} has no loader link but {names}; using {candidates[0][1]} as ostree does")
    version, name = candidates[0]
    return LoaderDir(tree.resolve(posixpath.join(boot, name)) or name, version, False), warnings


def read_entries(tree: GuestTree, loader: LoaderDir) -> tuple[list[BootEntry], list[str]]:
    """Parse every ``*.conf`` regular file of ``loader/entries``, in boot order; and warnings."""
    warnings: list[str] = []
    entries: list[BootEntry] = []
    names = tree.listdir(loader.entries, limit=ENTRIES_LIMIT)
    for name in names:
        if not name.endswith(".conf"):
            continue
        path = posixpath.join(loader.entries, name)
        st = tree.stat(path, follow=False)
        if st is None or st.type is not FileType.FILE:
            # ostree reads regular files only; a symlinked entry could point anywhere.
            warnings.append(f"{path} is not a regular file; ignored")
            continue
        try:
            text = tree.read_text(path, limit=ENTRY_LIMIT)
        except InvalidImage as exc:
            warnings.append(f"{exc}; entry ignored")
            continue
        entries.append(parse_entry(text, path))
    return sort_entries(entries), warnings
