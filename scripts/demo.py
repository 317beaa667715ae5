"""`make demo`: build a sample Atomic-like disk image, run the whole pipeline on it, boot-test the result.

Each step runs only if the part of liveimg it needs exists; a missing part is reported as
not built yet, never faked.  The demo's output goes to ./out/demo (replaced each run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "demo"


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def liveimg(*args: str) -> int:
    cmd = [sys.executable, "-m", "liveimg", *args]
    print("$ liveimg " + " ".join(args), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from liveimg import cli

    commands = {name for name, *_ in cli.COMMANDS}
    step("this machine")
    if liveimg("doctor") != 0:
        print("demo: some tools are missing (see above); run `make setup` as root")
        return 1

    builder = ROOT / "scripts" / "make-sample-image"
    if not builder.exists():
        print("demo: the sample image builder (scripts/make-sample-image) is not built yet: stopping here")
        return 0
    step("sample Atomic-like disk image (cached under ~/.cache/liveimg/samples)")
    result = subprocess.run([str(builder)], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True)
    image = result.stdout.strip().splitlines()[-1]
    print(f"sample image: {image}")

    if "inspect" in commands:
        step("inspect the image")
        if liveimg("inspect", image) != 0:
            return 1
    if "build" not in commands:
        print("demo: `liveimg build` (the whole pipeline) is not built yet: stopping here")
        return 0
    step("build the live PXE artifacts")
    if liveimg("build", image, "-o", str(OUT), "--force") != 0:
        return 1
    if "boot-test" not in commands:
        print("demo: `liveimg boot-test` is not built yet: stopping here")
        return 0
    step("boot the artifacts over PXE in QEMU")
    return liveimg("boot-test", str(OUT))


if __name__ == "__main__":
    sys.exit(main())
