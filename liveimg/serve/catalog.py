"""What ``liveimg serve`` serves: the builds, each file at its URL path, and the boot menus.

:func:`load_builds` reads the ``manifest.json`` of each OUTDIR given and checks every file the
serve needs against it (size and sha256: the ETag the HTTP server sends is then the truth).
Only the files a network boot needs are served -- the kernel, the initrds, the live file, the
cloud-init seed, the UEFI chain (shim, GRUB) -- each under ``/<name>/`` where ``<name>`` is the
build's :attr:`ServedBuild.name` (its OUTDIR's name, made safe for URLs, TFTP and boot configs,
and unique).  The build's own boot configurations are not served: they point at the URL it
was built for, and :func:`menus` writes them again for the serve's own URL, with one entry per
build, the newest (by its manifest's time) first and the default.

:class:`Plan` is the whole of it: the HTTP paths, the TFTP tree, the menus and the boot file
for each kind of client.  :mod:`liveimg.serve.service` serves a plan; :mod:`liveimg.serve.configs`
writes the equivalent configuration of nginx, dnsmasq or Kea for it.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveimg import bootsyntax
from liveimg.bootsyntax import GrubConfig, IpxeScript, PxelinuxConfig, Source
from liveimg.errors import HostError, InvalidImage, InvalidOptions
from liveimg.iso import SYSLINUX_BIOS_DIR
from liveimg.manifest import live_boot, read_manifest, sha256_file
from liveimg.progress import Progress, StageProgress
from liveimg.pxe import (
    LiveBoot,
    PxeOptions,
    grub_entry,
    grub_http_base,
    grub_prefix,
    ipxe_entry,
    kernel_args,
    pxelinux_entry,
)

#: Debian's PXE loaders (packages pxelinux, syslinux-common, ipxe).
PXELINUX_DIR = Path("/usr/lib/PXELINUX")
PXELINUX = PXELINUX_DIR / "pxelinux.0"
#: What pxelinux loads besides itself: its core, and for a menu the menu module and its library.
SYSLINUX_MODULES = ("ldlinux.c32", "menu.c32", "libutil.c32")
UNDIONLY = Path("/usr/lib/ipxe/undionly.kpxe")

#: The menus' names in the TFTP tree and over HTTP.
PXELINUX_MENU = "pxelinux.cfg/default"
IPXE_MENU = "boot.ipxe"
#: Seconds a menu waits before it boots the default (the newest build).
MENU_TIMEOUT = 5


class BiosLoader(enum.Enum):
    """What a BIOS client boots.

    ``auto``: a client already running iPXE (its DHCP user class says so) runs the iPXE menu
    over HTTP; any other PXE firmware gets pxelinux.  ``pxelinux``: every BIOS client gets
    pxelinux, iPXE included.  ``ipxe``: a client not running iPXE gets iPXE (``undionly.kpxe``),
    which asks DHCP again as iPXE and runs the iPXE menu.
    """

    AUTO = "auto"
    PXELINUX = "pxelinux"
    IPXE = "ipxe"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Artifact:
    """A file of a build: where it is, and what its manifest says it is."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class ServedBuild:
    """One OUTDIR being served under ``/<name>/``."""

    outdir: Path
    name: str
    manifest: Mapping[str, Any]
    live: LiveBoot
    built: float  # the manifest's mtime: OUTDIR is replaced whole, so this is when the build ended
    files: Mapping[str, Artifact]  # relative name in OUTDIR -> file

    @property
    def cloud_init(self) -> bool:
        return bool(self.manifest["boot"].get("cloud_init"))


def _files_of(
    outdir: Path, manifest: Mapping[str, Any], live: LiveBoot, stage: StageProgress | None = None
) -> dict[str, Artifact]:
    """The files of ``outdir`` a network boot needs, checked against the manifest's size and sha256."""
    listed: Mapping[str, Any] = manifest.get("artifacts") or {}
    wanted = [live.kernel, *live.initrds]
    if live.embedded is None:
        wanted.append(live.squashfs)
    if live.efi is not None:
        wanted += [n for n in (live.efi.shim, live.efi.grub) if n is not None]
    wanted += sorted(n for n in listed if n.startswith("cloud-init/"))
    files: dict[str, Artifact] = {}
    for rel in wanted:
        entry = listed.get(rel)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("size"), int):
            raise InvalidImage(f"{outdir}/manifest.json does not list {rel}", hint="rebuild OUTDIR with liveimg build")
        path = outdir / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise InvalidOptions(f"{path} is missing: OUTDIR changed since its build", hint="rebuild it") from None
        if not stat.S_ISREG(st.st_mode):  # a regular file, never a link out of OUTDIR
            raise InvalidOptions(f"{path} is not a regular file", hint="serve OUTDIR as liveimg build wrote it")
        if st.st_size != entry["size"]:
            raise InvalidOptions(
                f"{path} has {st.st_size} bytes, its manifest says {entry['size']}: OUTDIR changed since its build",
                hint="rebuild it",
            )
        digest = sha256_file(path)
        if stage is not None:
            stage.advance(st.st_size)
        if digest != entry.get("sha256"):
            raise InvalidOptions(
                f"{path} does not match the sha256 in its manifest: OUTDIR changed since its build", hint="rebuild it"
            )
        files[rel] = Artifact(path, st.st_size, digest)
    return files


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def build_name(outdir: Path, taken: Sequence[str]) -> str:
    """The name ``outdir`` is served under: its own name made safe (letters, digits, ``._-``), unique."""
    base = _UNSAFE.sub("-", outdir.name).strip(".-_")[:40] or "build"
    if not base[0].isalnum():
        base = f"b{base}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return bootsyntax.file_name(name, what="the served build's name", source=Source.CALLER)


def load_builds(outdirs: Sequence[Path], progress: Progress | None = None) -> list[ServedBuild]:
    """The builds in ``outdirs``, checked (see the module docstring), newest first.

    ``progress`` gets a ``check`` stage counting the bytes hashed.
    """
    if not outdirs:
        raise InvalidOptions("nothing to serve", hint="name at least one OUTDIR of liveimg build")
    builds: list[ServedBuild] = []
    seen: set[Path] = set()
    with (progress or Progress()).stage("check", unit="B") as stage:
        for given in outdirs:
            builds.append(_load(Path(given).absolute(), seen, [b.name for b in builds], stage))
    return sorted(builds, key=lambda b: b.built, reverse=True)


def _load(outdir: Path, seen: set[Path], taken: Sequence[str], stage: StageProgress) -> ServedBuild:
    """One OUTDIR, checked; ``seen`` the OUTDIRs before it (it is added), ``taken`` their names."""
    if outdir.resolve() in seen:
        raise InvalidOptions(f"{outdir} is named twice", hint="name each OUTDIR once")
    seen.add(outdir.resolve())
    manifest = read_manifest(outdir)
    url = (manifest.get("pxe") or {}).get("url")
    if isinstance(url, str) and bootsyntax.is_nbd(url):
        raise InvalidOptions(
            f"{outdir} was built for {url}: its initramfs reads the live file over NBD, not HTTP",
            hint="rebuild it with an http:// --url (or none) to serve it, or export it with qemu-nbd",
        )
    live = live_boot(manifest)
    files = _files_of(outdir, manifest, live, stage)
    built = (outdir / "manifest.json").stat().st_mtime
    return ServedBuild(outdir, build_name(outdir, taken), manifest, live, built, files)


@dataclass(frozen=True)
class Plan:
    """What to serve, and how clients find it.

    ``http``: URL path (no leading ``/``) -> a file (:class:`Artifact`) or generated text.
    ``tftp``: TFTP path -> the same, what the firmware and the BIOS loaders read.
    ``bios_file``/``ipxe_url``/``uefi_file``: what DHCP names for a BIOS client not running
    iPXE, for a client running iPXE, and for a UEFI x86-64 client (None: no UEFI boot, as no
    build has a UEFI chain).
    """

    builds: tuple[ServedBuild, ...]
    base_url: str
    http: Mapping[str, Artifact | str]
    tftp: Mapping[str, Artifact | Path | str]
    bios_file: str
    ipxe_url: str
    uefi_file: str | None
    uefi_build: str | None = None
    loader: BiosLoader = BiosLoader.AUTO
    kernel_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def default(self) -> ServedBuild:
        return self.builds[0]


def _args(build: ServedBuild, url: str, extra: Sequence[str]) -> list[str]:
    """``build``'s live command line for files served at ``url`` (the build's own arguments, then ``extra``)."""
    boot = build.manifest["boot"]
    user = [*boot.get("kernel_args", ()), *extra]
    if build.cloud_init:
        user.append(f"ds=nocloud-net;s={url}/cloud-init/")
    options = PxeOptions(url=url, kernel_args=tuple(user), keep_image_args=bool(boot.get("keep_image_args", True)))
    return kernel_args(build.live, options, url)


def plan(
    builds: Sequence[ServedBuild],
    base_url: str,
    *,
    kernel_args: Sequence[str] = (),
    loader: BiosLoader = BiosLoader.AUTO,
) -> Plan:
    """The :class:`Plan` for ``builds`` (newest first) served at ``base_url`` (``http://HOST:PORT``).

    ``kernel_args`` are added to every build's command line (checked; a key the build has is replaced).
    """
    base_url = base_url.rstrip("/")
    extra = bootsyntax.kernel_args(kernel_args, what="--kernel-arg", source=Source.CALLER)
    http: dict[str, Artifact | str] = {}
    tftp: dict[str, Artifact | Path | str] = {}
    args = {b.name: tuple(_args(b, f"{base_url}/{b.name}", extra)) for b in builds}
    for build in builds:
        for rel, artifact in build.files.items():
            http[f"{build.name}/{rel}"] = artifact
        for rel in (build.live.kernel, *build.live.initrds):
            tftp[f"{build.name}/{rel}"] = build.files[rel]
        single = IpxeScript(f"iPXE script generated by liveimg serve: {build.name}")
        ipxe_entry(single, build.live, args[build.name], f"{base_url}/{build.name}")
        http[f"{build.name}/{IPXE_MENU}"] = single.text()
    http[IPXE_MENU] = ipxe_menu(builds, args, base_url)
    tftp[PXELINUX_MENU] = pxelinux_menu(builds, args)
    tftp[PXELINUX.name] = PXELINUX
    for module in SYSLINUX_MODULES:
        tftp[module] = SYSLINUX_BIOS_DIR / module
    bios_file = PXELINUX.name
    if loader is BiosLoader.IPXE:
        tftp[UNDIONLY.name] = UNDIONLY
        bios_file = UNDIONLY.name
    uefi = next((b for b in builds if b.live.efi is not None), None)
    uefi_file = None
    if uefi is not None and uefi.live.efi is not None:
        efi = uefi.live.efi
        for name in (efi.shim, efi.grub):
            if name is not None:
                tftp[name] = uefi.files[name]
        text = grub_menu(builds, args, base_url, http=efi.http)
        for config in efi.configs:
            tftp[config] = text
        uefi_file = efi.bootfile
    for path in (PXELINUX, *(SYSLINUX_BIOS_DIR / m for m in SYSLINUX_MODULES)):
        if not path.is_file():
            raise HostError(f"{path} is missing", hint="install the Debian packages pxelinux and syslinux-common")
    if loader is BiosLoader.IPXE and not UNDIONLY.is_file():
        raise HostError(f"{UNDIONLY} is missing", hint="install the Debian package ipxe")
    return Plan(
        builds=tuple(builds),
        base_url=base_url,
        http=http,
        tftp=tftp,
        bios_file=bios_file,
        ipxe_url=f"{base_url}/{IPXE_MENU}",
        uefi_file=uefi_file,
        uefi_build=uefi.name if uefi is not None else None,
        loader=loader,
        kernel_args=args,
    )


def _title(build: ServedBuild) -> str:
    return f"{bootsyntax.label(build.live.title)} ({build.name})"


def pxelinux_menu(builds: Sequence[ServedBuild], args: Mapping[str, Sequence[str]]) -> str:
    """``pxelinux.cfg/default``: one entry per build (files under ``<name>/``), the first the default.

    With several builds, pxelinux's menu (``menu.c32``) shows them; one boots without a menu.
    """
    config = PxelinuxConfig("pxelinux configuration generated by liveimg serve")
    if len(builds) > 1:
        config.directive("UI", "menu.c32")
        config.directive("MENU TITLE", "liveimg serve")
    config.directive("DEFAULT", builds[0].name)
    config.directive("PROMPT", "0")
    config.directive("TIMEOUT", str(MENU_TIMEOUT * 10))  # tenths of a second
    for build in builds:
        pxelinux_entry(config, build.name, build.live, args[build.name], build.name, menu_label=_title(build))
    return config.text()


def ipxe_menu(builds: Sequence[ServedBuild], args: Mapping[str, Sequence[str]], base_url: str) -> str:
    """``boot.ipxe``: one entry per build over HTTP; with several, iPXE's menu, the first the default."""
    script = IpxeScript("iPXE script generated by liveimg serve")
    if len(builds) > 1:
        labels = [(f"b{i}", _title(b)) for i, b in enumerate(builds)]
        script.menu("liveimg serve", labels, default="b0", timeout_ms=MENU_TIMEOUT * 1000)
    for i, build in enumerate(builds):
        if len(builds) > 1:
            script.label(f"b{i}")
        ipxe_entry(script, build.live, args[build.name], f"{base_url}/{build.name}")
    return script.text()


def grub_menu(builds: Sequence[ServedBuild], args: Mapping[str, Sequence[str]], base_url: str, *, http: bool) -> str:
    """``grub.cfg``: one menu entry per build, the first the default; files over TFTP, or over
    HTTP when the GRUB that reads it has the http module (``http``)."""
    config = GrubConfig("GRUB configuration generated by liveimg serve (UEFI PXE and HTTP boot)")
    config.command("set", "default=0")
    config.command("set", f"timeout={MENU_TIMEOUT}")
    for build in builds:
        http_base = grub_http_base(f"{base_url}/{build.name}") if http else None
        grub_entry(config, build.live, args[build.name], grub_prefix(build.name, http_base), name=build.name)
    return config.text()


def write_tree(plan: Plan, root: Path) -> None:
    """The TFTP tree of ``plan`` in ``root`` (an empty directory): see :func:`write_files`.

    dnsmasq reads it as an unprivileged user, so nothing in it may need the caller's rights.
    """
    write_files(plan.tftp, root)


def write_files(files: Mapping[str, Artifact | Path | str], root: Path) -> None:
    """``files`` (relative path -> a build's file, a host file or a text) in ``root`` (an empty
    directory), readable by all (directories 0755, files 0644): files are hard links to the
    builds' (copies across filesystems), the host's files (the loaders) copies, the texts files.

    Each path is checked to be plain names joined by ``/`` (:func:`~liveimg.bootsyntax.tftp_path`),
    so nothing is written outside ``root``.
    """
    root.chmod(0o755)
    for rel, what in files.items():
        dest = root / bootsyntax.tftp_path(rel, source=Source.CALLER)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.parent.chmod(0o755)
        if isinstance(what, str):
            dest.write_text(what)
        elif isinstance(what, Path):
            shutil.copyfile(what, dest)  # a host file (a loader): never a link whose mode we would change
        else:
            try:
                os.link(what.path, dest)
            except OSError:
                shutil.copyfile(what.path, dest)
        dest.chmod(0o644)


def describe(plan: Plan) -> dict[str, Any]:
    """What is served, for the CLI's first line and ``--progress json``."""
    return {
        "url": plan.base_url + "/",
        "builds": [
            {"name": b.name, "outdir": str(b.outdir), "title": b.live.title, "default": i == 0}
            for i, b in enumerate(plan.builds)
        ],
        "bios": plan.bios_file,
        "ipxe": plan.ipxe_url,
        "uefi": plan.uefi_file,
        "files": len(plan.http),
    }


__all__ = [
    "Artifact",
    "BiosLoader",
    "Plan",
    "ServedBuild",
    "build_name",
    "describe",
    "load_builds",
    "plan",
    "write_files",
    "write_tree",
]
