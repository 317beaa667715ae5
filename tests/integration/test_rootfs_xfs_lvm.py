"""The rootfs stage on the atomic-xfs-lvm sample: xfs on LVM goes through the copy method.

The comparison is in tests/integration/rootfs_compare.py.
"""

from __future__ import annotations

from pathlib import Path

from liveimg.rootfs import Method
from tests.integration.rootfs_compare import build_and_compare


def test_copy_method_on_xfs_lvm(tmp_path: Path) -> None:
    build_and_compare("atomic-xfs-lvm", tmp_path, Method.COPY, modes=False)
