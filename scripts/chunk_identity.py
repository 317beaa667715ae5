#!/usr/bin/python3
"""How much of one sample's partition is byte-identical to another's at the same offset.

Usage: ``chunk_identity.py OLD.raw NEW.raw [--partition root] [--chunk 131072]``

Reads the partition named ``--partition`` (from each image's ``.json`` manifest written by
``make-sample-image``) in both images, in chunks of ``--chunk`` bytes, and prints how many of
NEW's non-zero chunks equal OLD's chunk at the same offset: the share of the partition a cache
of OLD's blocks, keyed by content and position, could reuse for NEW.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _partition(image: Path, name: str) -> tuple[int, int]:
    manifest = json.loads(image.with_name(image.name + ".json").read_text())
    for part in manifest["partitions"]:
        if part["name"] == name:
            return int(part["offset"]), int(part["size"])
    raise SystemExit(f"{image}: no partition named {name} in its manifest")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chunk_identity.py", description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--partition", default="root")
    parser.add_argument("--chunk", type=int, default=128 * 1024)
    args = parser.parse_args(argv)
    old_off, old_size = _partition(args.old, args.partition)
    new_off, new_size = _partition(args.new, args.partition)
    zero = bytes(args.chunk)
    nonzero = same = 0
    with open(args.old, "rb") as old, open(args.new, "rb") as new:
        old.seek(old_off)
        new.seek(new_off)
        for _ in range(0, new_size, args.chunk):
            b = new.read(args.chunk)
            a = old.read(args.chunk) if old.tell() < old_off + old_size else b""
            if b == zero[: len(b)]:
                continue
            nonzero += 1
            same += a == b
    share = same / nonzero if nonzero else 0.0
    print(f"{args.partition}: {same} of {nonzero} non-zero {args.chunk // 1024} KiB chunks identical ({share:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
