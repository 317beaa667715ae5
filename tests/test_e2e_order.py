"""The e2e tier starts its longest files first: tests/conftest.py orders them, and make keeps the order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import E2E_LONGEST_FIRST

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent


def test_make_e2e_hands_out_files_in_collection_order() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^e2e: .*\n\t(.*)$", makefile, re.M)
    assert recipe is not None
    # without it, xdist sorts the files by their number of tests and the order below is lost
    assert "--dist loadfile" in recipe.group(1) and "--no-loadscope-reorder" in recipe.group(1)


def test_every_file_named_longest_first_exists() -> None:
    for name in E2E_LONGEST_FIRST:
        assert (REPO / "tests" / "e2e" / name).is_file(), name
