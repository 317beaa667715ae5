"""The rootfs stage on the classic sample: the partition method with /boot on the root.

The comparison is in tests/integration/rootfs_compare.py.
"""

from __future__ import annotations

from pathlib import Path

from liveimg.rootfs import Method
from tests.integration.rootfs_compare import build_and_compare


def test_partition_method_on_classic(tmp_path: Path) -> None:
    build_and_compare("classic", tmp_path, Method.PARTITION, modes=False)
