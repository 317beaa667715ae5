"""Stage 5, pxe: the boot configuration around the artifacts.

Always written: lorax's ``PXE_CONFIG`` (its template, with the ``<PXE_DIR>`` and ``<URL>``
placeholders left for the user, and ``ostree=`` on ostree images), so that tooling built
around livemedia-creator keeps working.  With a URL (where ``live-rootfs.squashfs.img``
will be served), ready configurations as well:

* ``pxelinux.cfg/default`` for BIOS PXE with pxelinux (kernel and initramfs over TFTP from
  ``pxe_dir``, ``IPAPPEND 2`` so that dracut brings up the interface that booted);
* ``boot.ipxe`` for iPXE (kernel and initramfs over HTTP from the same URL);
* ``grub.cfg`` for UEFI PXE and UEFI HTTP boot with GRUB (paths relative to the device
  GRUB booted from).  With the UEFI network boot chain in OUTDIR (:class:`EfiBoot`, the efi
  stage), it is written at each place that GRUB reads it (``boot.efi.configs``), and the
  kernel and initramfs come over HTTP (``(http,HOST:PORT)/...``) when that GRUB has the http
  module built in and the URL is ``http://``, else over TFTP (OUTDIR is the TFTP root);

With ``--embed-rootfs`` (:mod:`liveimg.embed`; :attr:`LiveBoot.embedded`) no URL is needed: the
live file comes as a second initrd, loaded from where the initramfs is (``initrd=a,b`` for
pxelinux, two ``initrd`` lines and two ``initrd=`` names for iPXE, whose names are then relative
to the script's own URL, TFTP or HTTP; ``initrd a b`` for GRUB), and ``root=live:/<live file>``
names it inside the initramfs; ``ip=dhcp`` only comes with a cloud-init seed's URL.

With an ``nbd://HOST[:PORT][/PATH]`` URL the live file is read over NBD (:mod:`liveimg.livenbd`):
the server exports it as ``PATH/live-rootfs.squashfs.img`` (``PXE_CONFIG`` says how); there is no
``boot.ipxe`` (iPXE would fetch the kernel from that URL) and no cloud-init seed.

And, when asked, a cloud-init NoCloud seed (``cloud-init/meta-data``, ``user-data``,
``vendor-data``) with ``ds=nocloud-net;s=<URL>/cloud-init/`` on the command line.

Every value goes into these files through :mod:`liveimg.bootsyntax`, which checks or quotes it
for each syntax: a value from the image that cannot be written safely is an
:class:`~liveimg.errors.InvalidImage`, one from the options an :class:`InvalidOptions`.

The kernel command line of the ready configurations::

    root=live:<URL>/live-rootfs.squashfs.img rd.live.image ip=dhcp [ostree=...]
    [the image's own arguments, minus those naming its disks] [the user's arguments]
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from liveimg import bootsyntax
from liveimg.bootsyntax import GrubConfig, IpxeScript, PxelinuxConfig, Source
from liveimg.embed import embedded_path
from liveimg.errors import InvalidImage, InvalidOptions
from liveimg.iscsi import IscsiStorage
from liveimg.staging import AtomicOutput

SQUASHFS_NAME = "live-rootfs.squashfs.img"
PXE_CONFIG = "PXE_CONFIG"
#: x86's COMMAND_LINE_SIZE: a longer command line is cut off by the kernel.
MAX_CMDLINE = bootsyntax.MAX_CMDLINE

#: Arguments of the installed system that name its disks: the live system has none of them.
DISK_ARGS = frozenset(
    {
        "root",
        "rootflags",
        "rootfstype",
        "ostree",
        "resume",
        "rd.lvm.lv",
        "rd.lvm.vg",
        "rd.luks.uuid",
        "rd.luks.name",
        "rd.md.uuid",
        "rd.dm.uuid",
        "rd.auto",
        "BOOT_IMAGE",
        "initrd",
        "boot",
    }
)


def arg_key(arg: str) -> str:
    """The parameter an argument sets (``ip`` of ``ip=dhcp``, also of ``"ip=a b"``)."""
    return bootsyntax.kernel_arg_key(arg)


def image_args(options: Sequence[str]) -> list[str]:
    """The installed system's kernel arguments that still make sense for a live boot, checked
    (:class:`~liveimg.errors.InvalidImage` for one that no configuration can carry)."""
    kept = [a for a in options if arg_key(a) not in DISK_ARGS]
    return bootsyntax.kernel_args(
        kept, what="the image's kernel argument", source=Source.GUEST,
        hint="use --no-image-kargs to leave the image's arguments out",
    )  # fmt: skip


def check_url(url: str) -> str:
    """The base URL where the artifacts will be served, without a trailing slash."""
    return bootsyntax.base_url(url)


class _SeedDumper(yaml.SafeDumper):
    """``yaml.safe_dump``'s dumper, writing multi-line strings (scripts, files) as ``|`` blocks
    where YAML can hold them so (it falls back to quoting where it cannot)."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_SeedDumper.add_representer(str, _str_block)


def dump_cloud_config(config: Mapping[str, Any], *, sort_keys: bool = True) -> str:
    """A ``#cloud-config`` user-data holding ``config``."""
    # Wide lines: a command stays on one line, as it was given.
    text = yaml.dump(config, Dumper=_SeedDumper, sort_keys=sort_keys, default_flow_style=False, width=1 << 16)
    return "#cloud-config\n" + text


@dataclass(frozen=True)
class CloudInitSeed:
    """A cloud-init NoCloud seed.  ``user_data`` (a whole user-data text) wins over the fields.

    ``iscsi`` (:class:`~liveimg.iscsi.IscsiStorage`) adds its files and commands to the user-data:
    to the one made from the fields, or to ``user_data`` when that is a ``#cloud-config`` (parsed
    and written again, so its comments are not kept); any other ``user_data`` is refused with it.
    """

    hostname: str = "liveimg"
    instance_id: str | None = None
    ssh_authorized_keys: tuple[str, ...] = ()
    password: str | None = None  # for root; a value starting with "$" is taken as a crypt hash
    write_files: tuple[tuple[str, str], ...] = ()  # (path, content)
    runcmd: tuple[str, ...] = ()
    user_data: str | None = None
    iscsi: IscsiStorage | None = None

    def __post_init__(self) -> None:
        bootsyntax.hostname(self.hostname)
        if self.instance_id is not None:
            bootsyntax.single_line(self.instance_id, what="the cloud-init instance-id")
        for key in self.ssh_authorized_keys:
            bootsyntax.single_line(key, what="--ci-ssh-key")
        if self.password is not None:
            bootsyntax.single_line(self.password, what="--ci-password")
        for path, _ in self.write_files:
            bootsyntax.single_line(path, what="a cloud-init write_files path")
        for command in self.runcmd:
            # A command is a shell script line (or lines); YAML quotes anything, but a NUL
            # would end the command where the shell reads it.
            if "\0" in command:
                raise InvalidOptions(f"--ci-runcmd {command[:60]!r} has a NUL character")

    def instance(self, seed: str) -> str:
        """The instance-id: the one given, else one derived from ``seed`` (the input) and the host name."""
        return self.instance_id or "liveimg-" + hashlib.sha256(f"{seed}\0{self.hostname}".encode()).hexdigest()[:16]

    def meta_data(self, seed: str) -> dict[str, str]:
        return {"instance-id": self.instance(seed), "local-hostname": self.hostname}

    def cloud_config(self, seed: str = "") -> dict[str, Any]:
        """The user-data made from the fields (``seed`` as for :meth:`instance`)."""
        config: dict[str, Any] = {"hostname": self.hostname, "preserve_hostname": False}
        if self.ssh_authorized_keys:
            config["ssh_authorized_keys"] = list(self.ssh_authorized_keys)
            config["users"] = ["default", {"name": "root", "ssh_authorized_keys": list(self.ssh_authorized_keys)}]
            config["disable_root"] = False
        if self.password is not None:
            kind = "hash" if self.password.startswith("$") else "text"
            config["chpasswd"] = {"expire": False, "users": [{"name": "root", "password": self.password, "type": kind}]}
            config["ssh_pwauth"] = True
        if self.write_files:
            config["write_files"] = [{"path": p, "content": c} for p, c in self.write_files]
        if self.runcmd:
            config["runcmd"] = list(self.runcmd)
        if self.iscsi is not None:
            config = self.iscsi.merge_into(config, self.iscsi.initiator_name(self.instance(seed), self.hostname))
        return config

    def user_data_text(self, seed: str = "") -> str:
        """The user-data file (``seed`` as for :meth:`instance`); an
        :class:`~liveimg.errors.InvalidOptions` for a ``user_data`` that cloud-init would not take."""
        if self.user_data is not None:
            if not self.user_data.startswith(("#cloud-config", "#!", "Content-Type:", "#include")):
                raise InvalidOptions(
                    "cloud-init user-data must start with #cloud-config, #!, #include or a MIME header"
                )
            config = None
            if self.user_data.startswith("#cloud-config"):
                try:
                    config = yaml.safe_load(self.user_data)
                except yaml.YAMLError as exc:
                    raise InvalidOptions(f"cloud-init user-data is not valid YAML: {exc}") from exc
            if self.iscsi is None:
                return self.user_data
            if not self.user_data.startswith("#cloud-config"):
                raise InvalidOptions(
                    "--ci-iscsi adds to a #cloud-config user-data, and this one is a script, an #include or MIME"
                )
            initiator = self.iscsi.initiator_name(self.instance(seed), self.hostname)
            return dump_cloud_config(self.iscsi.merge_into(config, initiator), sort_keys=False)
        return dump_cloud_config(self.cloud_config(seed))


@dataclass(frozen=True)
class PxeOptions:
    """What the boot configuration says.  Without ``url`` only ``PXE_CONFIG`` is written."""

    url: str | None = None
    pxe_dir: str = ""
    kernel_args: tuple[str, ...] = ()
    keep_image_args: bool = True
    cloud_init: CloudInitSeed | None = None

    def __post_init__(self) -> None:
        if self.url is not None:
            object.__setattr__(self, "url", check_url(self.url))
            if bootsyntax.is_nbd(self.url) and self.cloud_init is not None:
                raise InvalidOptions(
                    "a cloud-init seed is fetched over HTTP: it cannot be served at an nbd:// --url",
                    hint="leave the --ci-* options out, or give an http:// --url",
                )
        object.__setattr__(self, "pxe_dir", bootsyntax.tftp_dir(self.pxe_dir))
        bootsyntax.kernel_args(self.kernel_args, what="--kernel-arg", source=Source.CALLER)


@dataclass(frozen=True)
class EfiBoot:
    """The UEFI network boot chain in the output directory, which is laid out as a TFTP root.

    File names are relative to the output directory.  ``grub`` is a network-capable GRUB,
    named so that shim finds it beside itself; ``shim`` (when the image has one) is the
    file the firmware boots, verified against its Secure Boot keys.  ``configs`` are where
    that GRUB reads its ``grub.cfg`` (from the prefix built into the binary), and ``http``
    says whether it has the http module built in (the kernel and initramfs then come over
    HTTP, else over TFTP).  ``source`` says where the binaries came from.
    """

    grub: str
    shim: str | None = None
    configs: tuple[str, ...] = ("grub.cfg",)
    http: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        bootsyntax.file_name(self.grub, what="the GRUB file")
        if self.shim is not None:
            bootsyntax.file_name(self.shim, what="the shim file")
        object.__setattr__(self, "configs", tuple(bootsyntax.tftp_path(c) for c in self.configs))

    @property
    def bootfile(self) -> str:
        """What DHCP names as the boot file for UEFI x86_64 clients."""
        return self.shim or self.grub


@dataclass(frozen=True)
class LiveBoot:
    """What the earlier stages produced, as the pxe stage needs it."""

    kernel: str  # file name in the output directory, e.g. vmlinuz-<kver>
    initramfs: str  # e.g. initramfs-<kver>.img
    kver: str
    title: str
    ostree_arg: str | None = None
    image_args: tuple[str, ...] = ()
    squashfs: str = SQUASHFS_NAME
    seed_id: str = ""  # something that identifies the input, for a stable cloud-init instance id
    efi: EfiBoot | None = None  # the UEFI network boot chain, when the build has one (--efi)
    embedded: str | None = None  # --embed-rootfs: the second initrd holding the live file (liveimg.embed)
    ram_floor_mib: int | None = None  # the RAM a network boot needs, in MiB of MemTotal (liveimg.ramfloor)

    def __post_init__(self) -> None:
        floor = self.ram_floor_mib
        if floor is not None and (isinstance(floor, bool) or not isinstance(floor, int) or floor <= 0):
            raise InvalidImage(f"the live boot's RAM floor {floor!r} is not a positive number of MiB")
        # All of these come from the image (or from a manifest.json read back): InvalidImage.
        bootsyntax.kernel_version(self.kver, where="the live boot")
        bootsyntax.file_name(self.kernel, what="the kernel file")
        bootsyntax.file_name(self.initramfs, what="the initramfs file")
        bootsyntax.file_name(self.squashfs, what="the live image file")
        if self.embedded is not None:
            bootsyntax.file_name(self.embedded, what="the embedded live image's initrd")
        if self.ostree_arg is not None:
            bootsyntax.ostree_path(self.ostree_arg)

    @property
    def initrds(self) -> tuple[str, ...]:
        """The initrds the boot loader loads, in order: the initramfs, then the embedded live file's."""
        return (self.initramfs,) if self.embedded is None else (self.initramfs, self.embedded)


@dataclass(frozen=True)
class PxeResult:
    files: tuple[Path, ...]
    kernel_args: tuple[str, ...]  # the full command line of the ready configurations (root= with the URL)
    lorax_args: tuple[str, ...]  # what follows the placeholder root= in PXE_CONFIG
    extra: Mapping[str, Any] = field(default_factory=dict)


def kernel_args(boot: LiveBoot, options: PxeOptions, url: str | None) -> list[str]:
    """The live command line of a network boot, ``root=live:<URL>/...`` first, each argument once (the user's win).

    With the live file embedded (:attr:`LiveBoot.embedded`) it is ``root=live:/<file>`` instead,
    and ``url`` is only where a cloud-init seed is (None: no seed, no ``ip=dhcp``).
    """
    if boot.embedded is not None:
        seed_url = check_url(url) if url is not None and options.cloud_init is not None else None
        return live_kernel_args(boot, options, f"root=live:{embedded_path(boot.squashfs)}", url=seed_url)
    if url is None:
        raise InvalidOptions("a network boot of the live file needs --url (or --embed-rootfs)")
    url = check_url(url)
    if bootsyntax.is_nbd(url):
        bootsyntax.nbd_export(f"{url}/{boot.squashfs}")
    return live_kernel_args(boot, options, f"root=live:{url}/{boot.squashfs}", url=url)


def nbd_server_hint(boot: LiveBoot, url: str) -> str:
    """How to export the live file for an ``nbd://`` ``url``: a qemu-nbd command line."""
    host, port, export = bootsyntax.nbd_export(f"{check_url(url)}/{boot.squashfs}")
    return (
        f"qemu-nbd --read-only --persistent --shared=0 --port {port} --export-name {export} {boot.squashfs}"
        f"  (the live file as NBD export {export} on {host} port {port})"
    )


def live_kernel_args(boot: LiveBoot, options: PxeOptions, root: str, *, url: str | None) -> list[str]:
    """The live command line with ``root`` (a checked ``root=live:...``) first, each argument once.

    ``url`` is where the artifacts are served, for a network boot (``ip=dhcp`` and the cloud-init
    seed come with it); None for a boot from local media (the ISO: ``root=live:CDLABEL=...``).
    Then ``rd.live.image``, the deployment's ``ostree=``, the image's own arguments (unless
    ``options.keep_image_args`` is off) and the user's, which replace ours with the same key.
    """
    head = [root, "rd.live.image"]
    if url is not None:
        head.append("ip=dhcp")
    if boot.ostree_arg:
        head.append(f"ostree={boot.ostree_arg}")
    tail = [f"ds=nocloud-net;s={url}/cloud-init/"] if options.cloud_init is not None and url is not None else []
    # Made of checked parts, and checked as arguments all the same.
    args = bootsyntax.kernel_args(head, what="the live kernel argument", source=Source.CALLER)
    if options.keep_image_args:
        args += image_args(boot.image_args)
    args += bootsyntax.kernel_args(tail, what="the live kernel argument", source=Source.CALLER)
    user = bootsyntax.kernel_args(options.kernel_args, what="--kernel-arg", source=Source.CALLER)
    user_keys = {arg_key(a) for a in user}
    # An argument the user gives replaces ours with the same key (e.g. ip=, console=).
    args = [a for a in args if arg_key(a) not in user_keys or arg_key(a) == "root"] + user
    deduped: list[str] = []
    for arg in args:
        if arg not in deduped:
            deduped.append(arg)
    bootsyntax.command_line(deduped)
    return deduped


def lorax_pxe_config(boot: LiveBoot, options: PxeOptions) -> tuple[str, list[str]]:
    """lorax's PXE_CONFIG text (its template, placeholders kept) and the arguments after root=.

    With the UEFI network boot chain, comment lines after the template say which file DHCP
    must name for UEFI clients and that OUTDIR is their TFTP root.
    """
    add = [f"ostree={boot.ostree_arg}"] if boot.ostree_arg else []
    add += bootsyntax.kernel_args(options.kernel_args, what="--kernel-arg", source=Source.CALLER)
    config = PxelinuxConfig("PXE configuration template generated by liveimg (livemedia-creator compatible)")
    config.directive("kernel", f"<PXE_DIR>/{boot.kernel}")
    if boot.embedded is None:
        config.directive("append", f"initrd=<PXE_DIR>/{boot.initramfs}", f"root=live:<URL>/{boot.squashfs}", *add)
    else:
        initrds = ",".join(f"<PXE_DIR>/{name}" for name in boot.initrds)
        config.directive("append", f"initrd={initrds}", f"root=live:{embedded_path(boot.squashfs)}", *add)
        config.line(f"# --embed-rootfs: {boot.embedded} is a second initrd holding {boot.squashfs}; the boot")
        config.line("# loader loads it after the initramfs and the kernel unpacks both, so no HTTP server is needed:")
        config.line("# pxelinux initrd=a,b; iPXE one initrd line and one initrd= name each; GRUB initrd a b.")
        config.line(
            f"# RAM: {boot.embedded} twice, and the initramfs, while the kernel unpacks them (README, --embed-rootfs)."
        )
    if options.url is not None and bootsyntax.is_nbd(options.url):
        config.line(f"# NBD: <URL> is {options.url}; serve the live file with {nbd_server_hint(boot, options.url)}")
    if boot.efi is not None:
        signed = " (Secure Boot: shim, then GRUB)" if boot.efi.shim else ""
        config.line(f"# UEFI: serve this directory as the TFTP root; the DHCP boot file of UEFI clients is "
                    f"{boot.efi.bootfile}{signed}")  # fmt: skip
        config.line(f"# UEFI: GRUB ({boot.efi.grub}) reads {' and '.join(boot.efi.configs)}")
    # The floor is the HTTP way's (the live file downloaded into RAM), not an embedded or NBD boot's.
    over_http = boot.embedded is None and not (options.url is not None and bootsyntax.is_nbd(options.url))
    if boot.ram_floor_mib is not None and over_http:
        config.line(ram_note(boot.ram_floor_mib))
    return config.text(), add


def ram_note(floor_mib: int) -> str:
    """PXE_CONFIG's comment line on the RAM a network boot of this build needs."""
    return (f"# RAM: this build needs at least {floor_mib} MiB of RAM over HTTP, as Linux counts it "
            f"(MemTotal; installed RAM is larger by what firmware and kernel reserve); rd.live.ram=1 needs "
            f"the live file's size more")  # fmt: skip


def _path(pxe_dir: str, name: str) -> str:
    return f"{pxe_dir}/{name}" if pxe_dir else name


def pxelinux_config(boot: LiveBoot, args: Sequence[str], pxe_dir: str) -> str:
    """``pxelinux.cfg/default``: one entry, booted after 5 s; ``args`` are checked kernel arguments."""
    config = PxelinuxConfig("pxelinux configuration generated by liveimg")
    config.directive("DEFAULT", "live")
    config.directive("PROMPT", "0")
    config.directive("TIMEOUT", "50")
    pxelinux_entry(config, "live", boot, args, pxe_dir)
    return config.text()


def pxelinux_entry(
    config: PxelinuxConfig, name: str, boot: LiveBoot, args: Sequence[str], pxe_dir: str, *, menu_label: str = ""
) -> None:
    """One ``LABEL name`` of ``config``: ``boot``'s kernel and initrds under ``pxe_dir``, with ``args``.

    ``menu_label`` (a :func:`~liveimg.bootsyntax.label`) is what a menu shows: by default the title.
    """
    config.directive("LABEL", bootsyntax.file_name(name, what="the menu entry", source=Source.CALLER))
    config.directive("MENU LABEL", menu_label or f"{bootsyntax.label(boot.title)} (live)", indent=2)
    config.directive("KERNEL", _path(bootsyntax.tftp_dir(pxe_dir), boot.kernel), indent=2)
    initrds = ",".join(_path(bootsyntax.tftp_dir(pxe_dir), initrd) for initrd in boot.initrds)
    config.directive("APPEND", f"initrd={initrds}", *args, indent=2)
    config.directive("IPAPPEND", "2", indent=2)


def ipxe_script(boot: LiveBoot, args: Sequence[str], url: str | None) -> str:
    """``boot.ipxe``: kernel and initramfs over HTTP from ``url``; ``args`` are checked kernel arguments.

    Without ``url`` (the live file embedded), the names are relative: iPXE resolves them against
    the script's own URL, so they come from where the script came from, TFTP or HTTP.
    """
    script = IpxeScript("iPXE script generated by liveimg")
    ipxe_entry(script, boot, args, url)
    return script.text()


def ipxe_entry(script: IpxeScript, boot: LiveBoot, args: Sequence[str], url: str | None) -> None:
    """The commands that boot ``boot`` from ``url`` (or relative names, see :func:`ipxe_script`)."""
    base = f"{check_url(url)}/" if url is not None else ""
    script.command("echo", "Booting", bootsyntax.label(boot.title), "(live)")
    # initrd= names each initrd for kernels booted through EFI stubs; harmless on BIOS.
    script.command("kernel", f"{base}{boot.kernel}", *(f"initrd={name}" for name in boot.initrds), *args)
    for name in boot.initrds:
        script.command("initrd", f"{base}{name}")
    script.command("boot")


def grub_http_base(url: str) -> str | None:
    """Where GRUB's http module fetches ``url``'s files: ``(http,HOST[:PORT])/PATH``; None for a URL
    it cannot name (not ``http://``, with user information, or an IPv6 host)."""
    parts = urllib.parse.urlsplit(check_url(url))
    if parts.scheme != "http" or "@" in parts.netloc or "[" in parts.netloc:
        return None
    return f"(http,{parts.netloc}){parts.path.rstrip('/')}"


def grub_config(boot: LiveBoot, args: Sequence[str], pxe_dir: str, *, http_base: str | None = None) -> str:
    """``grub.cfg`` for UEFI PXE and HTTP boot; ``args`` are checked kernel arguments.

    The kernel and initramfs are paths on the device GRUB booted from (under ``pxe_dir``), or,
    with ``http_base`` (:func:`grub_http_base`), fetched by GRUB's http module from there.
    """
    config = GrubConfig("GRUB configuration generated by liveimg (UEFI PXE and HTTP boot)")
    config.command("set", "default=0")
    config.command("set", "timeout=5")
    grub_entry(config, boot, args, grub_prefix(pxe_dir, http_base))
    return config.text()


def grub_prefix(pxe_dir: str, http_base: str | None = None) -> str:
    """Where GRUB finds the files of a build under ``pxe_dir`` of its TFTP root, or at ``http_base``."""
    if http_base is not None:
        return http_base
    pxe_dir = bootsyntax.tftp_dir(pxe_dir)
    return f"/{pxe_dir.lstrip('/')}" if pxe_dir else ""


def grub_entry(config: GrubConfig, boot: LiveBoot, args: Sequence[str], prefix: str, *, name: str = "") -> None:
    """One ``menuentry`` of ``config``: ``boot``'s kernel and initrds at ``prefix`` (:func:`grub_prefix`)."""
    title = f"{bootsyntax.label(boot.title)} (live{', ' + name if name else ''})"
    config.begin("menuentry", title)
    config.command("linux", f"{prefix}/{boot.kernel}", *(bootsyntax.grub_linux_word(a) for a in args))
    config.command("initrd", *(f"{prefix}/{initrd}" for initrd in boot.initrds))
    config.end()


def write_pxe(outdir: Path, boot: LiveBoot, options: PxeOptions) -> PxeResult:
    """Write the boot configuration files into ``outdir`` (which holds the artifacts)."""
    files: list[Path] = []

    def write(rel: str, text: str) -> None:
        path = outdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with AtomicOutput(path) as tmp:
            tmp.write_text(text)
        files.append(path)

    text, lorax_args = lorax_pxe_config(boot, options)
    write(PXE_CONFIG, text)
    args: list[str] = []
    if options.url is not None or boot.embedded is not None:
        args = kernel_args(boot, options, options.url)
        # Embedded, the artifacts come from where the boot loader came from: no HTTP server.
        served = options.url if boot.embedded is None else None
        write("pxelinux.cfg/default", pxelinux_config(boot, args, options.pxe_dir))
        if options.url is None or not bootsyntax.is_nbd(options.url):  # iPXE would fetch the kernel from the URL
            write("boot.ipxe", ipxe_script(boot, args, served))
        if boot.efi is None:
            write("grub.cfg", grub_config(boot, args, options.pxe_dir))
        else:
            http_base = grub_http_base(served) if boot.efi.http and served is not None else None
            text = grub_config(boot, args, options.pxe_dir, http_base=http_base)
            for config in boot.efi.configs:
                write(config, text)  # checked plain relative paths (EfiBoot)
    if options.cloud_init is not None:
        seed = options.cloud_init
        write("cloud-init/meta-data", yaml.safe_dump(seed.meta_data(boot.seed_id), sort_keys=True))
        write("cloud-init/user-data", seed.user_data_text(boot.seed_id))
        write("cloud-init/vendor-data", "")  # NoCloud asks for it; an empty file avoids a 404
    return PxeResult(files=tuple(files), kernel_args=tuple(args), lorax_args=tuple(lorax_args))
