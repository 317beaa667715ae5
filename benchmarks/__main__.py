"""``python -m benchmarks`` (``make bench``): every macro benchmark in turn."""

from __future__ import annotations

from benchmarks import squashfs

raise SystemExit(squashfs.main([]))
