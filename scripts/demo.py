"""`make demo`: build a sample Atomic-like disk image, run the whole pipeline on it, boot-test the result.

The steps are what a new user would type: ``liveimg doctor``, ``scripts/make-sample-image``,
``liveimg inspect``, ``liveimg build``, ``liveimg boot-test``.  liveimg's own progress goes to
stderr (bars on a terminal, one line per finished stage otherwise).  The output goes to
./out/demo (replaced each run).  The exit status is the first failing step's, else 0.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "demo"


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def liveimg(*args: str) -> int:
    print("$ liveimg " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, "-m", "liveimg", *args], cwd=ROOT, check=False).returncode


def main() -> int:
    started = time.monotonic()
    step("this machine")
    if liveimg("doctor") != 0:
        print("demo: some tools are missing (see above): run `make setup` as root", flush=True)
        return 1

    step("sample Atomic-like disk image (cached under ~/.cache/liveimg/samples)")
    built = subprocess.run(
        [str(ROOT / "scripts" / "make-sample-image")], cwd=ROOT, check=False, stdout=subprocess.PIPE, text=True
    )
    if built.returncode != 0:
        print(f"demo: the sample image builder failed (exit {built.returncode})", flush=True)
        return built.returncode
    image = built.stdout.strip().splitlines()[-1]
    print(f"sample image: {image}", flush=True)

    step("inspect the image")
    if (status := liveimg("inspect", image)) != 0:
        return status

    step("build the live PXE artifacts")
    # lorax's defaults (xz + BCJ squashfs, xz initramfs), plus ready configs for a URL.
    if (status := liveimg("build", image, "-o", str(OUT), "--force", "--url", "http://pxe.example.com/live",
                          "--kernel-arg", "rd.live.overlay.size=1024")) != 0:  # fmt: skip
        return status

    step("boot the artifacts over PXE in QEMU (pxelinux over TFTP, the squashfs over HTTP)")
    if (status := liveimg("boot-test", str(OUT), "--via", "pxelinux", "--write", "600")) != 0:
        return status
    print(f"\ndemo: done in {time.monotonic() - started:.0f} s; the artifacts are in {OUT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
