"""Pack one benchmark input with liveimg's writer and write the result as JSON (run under /usr/bin/time)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from liveimg.squashfs.options import SquashfsOptions
from liveimg.squashfs.writer import pack, pack_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("dest")
    parser.add_argument("--options", required=True, help="SquashfsOptions as JSON")
    parser.add_argument("--file-as")
    parser.add_argument("--stats", required=True)
    args = parser.parse_args()
    fields = json.loads(args.options)
    fields["Xbcj"] = tuple(fields.get("Xbcj", ()))
    options = SquashfsOptions(**fields)
    if args.file_as:
        result = pack_file(Path(args.source), Path(args.dest), args.file_as, options)
    else:
        result = pack(Path(args.source), Path(args.dest), options)
    Path(args.stats).write_text(json.dumps({"size": result.size, "seconds": result.seconds, **result.stats}))


if __name__ == "__main__":
    main()
