"""Which dracut modules to ask for: lorax's list, minus what the guest's dracut cannot install.

lorax always passes ``--add "livenet dmsquash-live dmsquash-live-ntfs convertfs pollcdrom qemu
qemu-net"``.  dracut fails outright when an explicitly added module cannot be installed, and
some of those are optional for a PXE live boot: ``dmsquash-live-ntfs`` needs ``ntfs-3g`` (absent
from most server images, e.g. the Debian sample), ``qemu-net`` needs the network modules.  So
each module is looked up in the guest first:

* it must exist: a directory ``modules.d/NNname`` (``90dmsquash-live`` in dracut <= 059,
  ``70dmsquash-live`` in dracut-ng), in ``/usr/lib/dracut`` (``/lib/dracut`` on old layouts);
* the binaries its ``check()`` demands unconditionally (``require_binaries ntfs-3g || return 1``)
  must be in the guest;
* and so, recursively, for the modules its ``depends()`` names unconditionally.

Only what can be decided cheaply and surely from the text of ``module-setup.sh`` is checked:
lines inside ``if``/``case``/loops, or guarded by ``&&``/``||`` before the call, and words with
shell variables are ignored, so the check never rejects a module dracut would accept on those
grounds.  An optional module that fails is left out and reported with the reason; a required
one (``dmsquash-live``, ``livenet``, and ``ostree`` on ostree images) is an error that names the
package to install in the image.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from liveimg.errors import GuestPathEscapes, InvalidImage
from liveimg.fsview import FileType, GuestTree

log = logging.getLogger(__name__)

#: lorax's ``--add`` list (``DRACUT_DEFAULT`` in pylorax/creator.py).
LORAX_MODULES: tuple[str, ...] = (
    "livenet",
    "dmsquash-live",
    "dmsquash-live-ntfs",
    "convertfs",
    "pollcdrom",
    "qemu",
    "qemu-net",
)
#: Modules without which the initramfs cannot boot a live image over the network.
LIVE_MODULES: tuple[str, ...] = ("dmsquash-live", "livenet")
OSTREE_MODULE = "ostree"

MODULE_DIRS: tuple[str, ...] = ("/usr/lib/dracut/modules.d", "/lib/dracut/modules.d")
BIN_DIRS: tuple[str, ...] = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

#: The package that ships a module (same name on Fedora and Debian unless noted).
MODULE_PACKAGES: dict[str, str] = {
    "dmsquash-live": "dracut-live",
    "dmsquash-live-ntfs": "dracut-live",
    "dmsquash-live-autooverlay": "dracut-live",
    "livenet": "dracut-live",
    "img-lib": "dracut-live",
    "network": "dracut-network",
    "network-legacy": "dracut-network",
    "network-manager": "dracut-network or NetworkManager",
    "kernel-network-modules": "dracut-network",
    "url-lib": "dracut-network",
    "qemu-net": "dracut-network",
    "ostree": "ostree-boot (Debian) or ostree (Fedora)",
}
#: The package that ships a binary a module requires, where it is not the binary's name.
BINARY_PACKAGES: dict[str, str] = {
    "dmsetup": "dmsetup (Debian) or device-mapper (Fedora)",
    "ntfs-3g": "ntfs-3g",
    "curl": "curl",
}

_MODULE_DIR = re.compile(r"^(\d\d)([A-Za-z0-9][A-Za-z0-9_.+-]*)$")
_SETUP_LIMIT = 256 * 1024


@dataclass(frozen=True)
class ModuleInfo:
    """What module-setup.sh says about a module, as far as it can be read without running it."""

    name: str
    directory: str  # guest path, e.g. /usr/lib/dracut/modules.d/90dmsquash-live
    requires: tuple[tuple[str, ...], ...]  # each group: at least one of these binaries
    depends: tuple[str, ...]


@dataclass(frozen=True)
class Selection:
    """The modules to ``--add``, and those left out with the reason."""

    modules: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]


def _function_body(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    head = re.compile(rf"^\s*(function\s+)?{re.escape(name)}\s*\(\)\s*\{{?\s*$")
    for i, line in enumerate(lines):
        if head.match(line):
            body: list[str] = []
            for inner in lines[i + 1 :]:
                if inner.rstrip() == "}":
                    return body
                body.append(inner)
            return body
    return []


def _unconditional(lines: Iterable[str]) -> Iterable[str]:
    """Lines at the top level of a function body (not inside if/case/loops), comments dropped."""
    depth = 0
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        first = line.split()[0].rstrip(";")
        if first in ("fi", "done", "esac"):
            depth = max(0, depth - 1)
            continue
        if first in ("if", "for", "while", "until", "case"):
            opens = 1
            closes = sum(line.split().count(k) for k in ("fi", "done", "esac", "fi;", "done;", "esac;"))
            depth += max(0, opens - closes)
            continue
        if depth == 0:
            yield line


def _words(fragment: str) -> list[str]:
    try:
        words = shlex.split(fragment, comments=True)
    except ValueError:
        return []
    split = [part for w in words for part in w.split()]
    return [w for w in split if "$" not in w and "`" not in w and not w.startswith("-")]


def parse_module_setup(text: str) -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """The unconditional ``require_binaries`` groups of ``check()`` and modules of ``depends()``."""
    requires: list[tuple[str, ...]] = []
    for line in _unconditional(_function_body(text, "check")):
        calls = re.findall(r"\brequire_(binaries|any_binary)\b", line)
        if len(calls) != 1 or not re.match(r"^require_(binaries|any_binary)\b", line):
            continue  # guarded (`[[ ... ]] && require_...`) or alternatives: not decidable here
        kind = calls[0]
        args = re.split(r"\|\||&&|;|\|", line[len("require_") + len(kind) :], maxsplit=1)[0]
        names = _words(args)
        if not names:
            continue
        if kind == "any_binary":
            requires.append(tuple(names))
        else:
            requires.extend((n,) for n in names)
    depends: list[str] = []
    for line in _unconditional(_function_body(text, "depends")):
        if not line.startswith("echo ") or re.search(r"&&|\|\|", line):
            continue
        for name in _words(line[len("echo ") :]):
            if name not in depends:
                depends.append(name)
    return tuple(requires), tuple(depends)


def scan_modules(tree: GuestTree) -> dict[str, ModuleInfo]:
    """Every dracut module installed in the guest, by name."""
    found: dict[str, ModuleInfo] = {}
    seen_dirs: set[str] = set()
    for base in MODULE_DIRS:
        real = tree.resolve(base)
        if real is None or real in seen_dirs or not tree.is_dir(real):
            continue
        seen_dirs.add(real)
        for entry in tree.listdir(real):
            match = _MODULE_DIR.match(entry)
            if not match or match.group(2) in found:
                continue
            directory = f"{real}/{entry}"
            setup = f"{directory}/module-setup.sh"
            text = ""
            if tree.is_file(setup):
                text = tree.read_head(setup, _SETUP_LIMIT).decode("utf-8", "replace")
            requires, depends = parse_module_setup(text)
            found[match.group(2)] = ModuleInfo(match.group(2), directory, requires, depends)
    return found


def is_executable(tree: GuestTree, path: str) -> bool:
    """Whether ``path`` (links followed inside the guest) is a regular file with an execute bit."""
    try:
        st = tree.stat(path)
    except GuestPathEscapes:
        return False  # a link out of the guest: dracut could not use it either
    return st is not None and st.type is FileType.FILE and bool(st.mode & 0o111)


def find_binary(tree: GuestTree, name: str) -> bool:
    """Whether the guest has the program ``name`` (a name looked up in PATH, or an absolute path)."""
    candidates = [name] if name.startswith("/") else [f"{d}/{name}" for d in BIN_DIRS]
    return any(is_executable(tree, c) for c in candidates)


@dataclass(frozen=True)
class Problem:
    """Why a module cannot be installed, and the package that would fix it."""

    reason: str
    package: str | None


class ModuleChecker:
    """Decides, per module, whether the guest's dracut can install it (results are cached)."""

    def __init__(self, tree: GuestTree) -> None:
        self.tree = tree
        self.modules = scan_modules(tree)
        self._verdicts: dict[str, Problem | None] = {}
        self._binaries: dict[str, bool] = {}

    def has_binary(self, name: str) -> bool:
        if name not in self._binaries:
            self._binaries[name] = find_binary(self.tree, name)
        return self._binaries[name]

    def problem(self, name: str, _chain: tuple[str, ...] = ()) -> Problem | None:
        """Why module ``name`` cannot be installed, or None if it can (as far as we can tell)."""
        if name in self._verdicts:
            return self._verdicts[name]
        verdict: Problem | None = None
        info = self.modules.get(name)
        if info is None:
            package = MODULE_PACKAGES.get(name)
            verdict = Problem(
                f"the image has no dracut module {name}" + (f" (package {package})" if package else ""), package
            )
        else:
            for group in info.requires:
                if not any(self.has_binary(b) for b in group):
                    package = " or ".join(BINARY_PACKAGES.get(b, b) for b in group)
                    verdict = Problem(
                        f"module {name} needs {' or '.join(group)}, which the image lacks (package {package})", package
                    )
                    break
            else:
                for dep in info.depends:
                    if dep in _chain or dep == name:
                        continue
                    why = self.problem(dep, (*_chain, name))
                    if why is not None:
                        verdict = Problem(f"{why.reason}; {name} depends on {dep}", why.package)
                        break
        if not _chain:
            self._verdicts[name] = verdict
        return verdict


def select_modules(
    tree: GuestTree,
    *,
    wanted: Sequence[str],
    required: Sequence[str],
    checker: ModuleChecker | None = None,
) -> Selection:
    """Keep each of ``wanted`` the guest can install; any of ``required`` it cannot is an error."""
    check = checker or ModuleChecker(tree)
    if not check.modules:
        raise InvalidImage(
            "the image has no dracut modules (no modules.d in /usr/lib/dracut or /lib/dracut)",
            hint="install dracut, dracut-live and dracut-network in the image",
        )
    for name in required:
        why = check.problem(name)
        if why is not None:
            hint = (
                f"install {why.package} in the image"
                if why.package
                else f"install the package that provides the dracut module {name} in the image"
            )
            raise InvalidImage(f"cannot build a live initramfs: {why.reason}", hint=hint)
    keep: list[str] = []
    left_out: list[tuple[str, str]] = []
    for name in dict.fromkeys([*required, *wanted]):
        why = check.problem(name)
        if why is None:
            keep.append(name)
        else:
            log.info("leaving dracut module %s out: %s", name, why.reason)
            left_out.append((name, why.reason))
    return Selection(tuple(keep), tuple(left_out))
