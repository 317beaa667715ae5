"""Small fake guest trees for the unit tests: dracut modules and programs, nothing that runs."""

from __future__ import annotations

import shutil
from pathlib import Path

from liveimg import run as runner

#: module name -> (check() body, depends() body), shaped like dracut's module-setup.sh files.
MODULES: dict[str, tuple[str, str]] = {
    "base": ("return 0", ""),
    "bash": ("require_binaries bash || return 1\n    return 255", ""),
    "dm": ("require_binaries dmsetup || return 1\n    return 255", ""),
    "rootfs-block": ("return 0", "echo base"),
    "img-lib": ("require_binaries tar gzip || return 1\n    return 255", ""),
    "overlayfs": ("[[ $hostonly ]] && return 1\n    return 255", "echo base"),
    "dmsquash-live": ("[[ $hostonly ]] && return 1\n    return 255", "echo dm rootfs-block img-lib overlayfs"),
    "dmsquash-live-ntfs": ("require_binaries ntfs-3g || return 1\n    return 255", "echo dmsquash-live"),
    "url-lib": ("require_binaries curl || return 1\n    return 255", "echo network"),
    "network": (
        "return 255",
        'is_qemu_virtualized && echo -n "qemu-net "\n'
        '    if [ -z "$handler" ]; then\n        echo network-manager\n    fi\n'
        '    echo "kernel-network-modules $network_handler"',
    ),
    "kernel-network-modules": ("return 255", ""),
    "livenet": ("return 255", "echo network url-lib dmsquash-live img-lib bash"),
    "convertfs": ("[[ $mount_needs ]] && return 1\n    return 255", "echo base bash"),
    "pollcdrom": ("return 255", "return 0"),
    "qemu": ("return 0", ""),
    "qemu-net": ("return 0", ""),
    "ostree": ("return 0", ""),
    "crypt": (
        "if [[ $hostonly ]]; then\n        require_binaries cryptsetup || return 1\n    fi\n    return 255",
        "",
    ),
}
PROGRAMS = ("bash", "dmsetup", "tar", "gzip", "curl", "sh", "dracut")


def module_setup(check: str, depends: str) -> str:
    return (
        f"#!/bin/bash\n\ncheck() {{\n    {check}\n}}\n\n"
        f"depends() {{\n    {depends}\n    return 0\n}}\n\ninstall() {{\n    :\n}}\n"
    )


def make_guest(
    root: Path,
    *,
    modules: dict[str, tuple[str, str]] | None = None,
    programs: tuple[str, ...] = PROGRAMS,
    prefix: str = "90",
    kvers: tuple[str, ...] = ("6.1.0-50-amd64",),
) -> Path:
    """A usr-merged guest tree with dracut modules, executable stubs and kernel module dirs."""
    for d in ("usr/bin", "usr/sbin", "usr/lib/dracut/modules.d", "etc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        if not (root / link).is_symlink():
            (root / link).symlink_to(target)
    for name, (check, depends) in (MODULES if modules is None else modules).items():
        mod = root / "usr/lib/dracut/modules.d" / f"{prefix}{name}"
        mod.mkdir(exist_ok=True)
        (mod / "module-setup.sh").write_text(module_setup(check, depends))
    for program in programs:
        stub = root / "usr/bin" / program
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    for kver in kvers:
        (root / "usr/lib/modules" / kver / "kernel").mkdir(parents=True, exist_ok=True)
    return root


# A stand-in for the guest's dracut: a busybox script that writes a small initramfs holding the
# files liveimg checks for.  ``prelude`` and ``postlude`` are shell run before and after that
# (the hostile corpus, tests/hostile_images.py, puts its attacks there).
FAKE_DRACUT = """#!/bin/sh
echo "fake dracut $*"
out=""
for a in "$@"; do case "$a" in /run/liveimg/*) out="$a";; esac; done
@PRELUDE@
[ -e /etc/fake-write-nothing ] && exit 0
[ -e /etc/fake-archive ] && { cat /etc/fake-archive > "$out"; exit 0; }
i=/var/tmp/initramfs
mkdir -p $i/usr/sbin $i/usr/bin $i/dev $i/etc
echo '#!/bin/sh' > $i/usr/sbin/dmsquash-live-root
[ -e /etc/fake-omit-livenet ] || echo '#!/bin/sh' > $i/usr/sbin/livenetroot
echo curl > $i/usr/bin/curl
echo prepare > $i/usr/sbin/ostree-prepare-root
cat /etc/dracut.conf.d/*.conf > $i/etc/seen.conf 2>/dev/null
ls /boot > $i/etc/seen-boot
(cd $i && find . | cpio -o -H newc > "$out")
@POSTLUDE@
"""
#: busybox applets the fake guest has (in /usr/bin).
APPLETS = ("sh", "echo", "mkdir", "cat", "ls", "find", "cpio", "head", "ln", "rm", "sleep", "nc", "mount", "id",
           "touch", "dd")  # fmt: skip


def dracut_guest(root: Path, *, prelude: str = "", postlude: str = "") -> Path:
    """A guest whose dracut is :data:`FAKE_DRACUT` (busybox): runs in the sandbox in milliseconds."""
    root = make_guest(root, programs=tuple(p for p in PROGRAMS if p not in ("sh", "dracut")))
    shutil.copy2(runner.require("busybox"), root / "usr/bin/busybox")
    for applet in APPLETS:
        (root / "usr/bin" / applet).symlink_to("busybox")
    script = FAKE_DRACUT.replace("@PRELUDE@", prelude).replace("@POSTLUDE@", postlude)
    (root / "usr/bin/dracut").write_text(script)
    (root / "usr/bin/dracut").chmod(0o755)
    (root / "ostree").symlink_to("sysroot/ostree")
    return root
