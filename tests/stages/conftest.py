from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from liveimg.outdir import OutdirTransaction


@pytest.fixture
def txn(tmp_path: Path) -> Iterator[OutdirTransaction]:
    """An OUTDIR transaction for a stage to write into, ended (never committed) after the test."""
    transaction = OutdirTransaction(tmp_path / "out")
    try:
        yield transaction
    finally:
        transaction.close()
