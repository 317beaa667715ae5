"""The README's boot-loader table names only boot-test ways that exist and e2e tests that boot them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from liveimg.boottest import VIAS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
HEADING = "### Boot loaders, and the firmware each was booted on in the tests"


def table_rows() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split(HEADING, 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| boot loader")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_the_table_names_every_boot_loader_the_issue_asks_for() -> None:
    loaders = " ".join(row[0] for row in table_rows())
    for name in ("pxelinux", "iPXE", "isolinux", "GRUB, BIOS", "GRUB, UEFI", "GRUB + shim, Secure Boot"):
        assert name in loaders


@pytest.mark.parametrize("row", table_rows(), ids=lambda row: row[0])
def test_each_row_names_real_ways_booted_by_its_e2e_test(row: list[str]) -> None:
    loader, firmware, ways, test = row
    assert firmware
    test_file = REPO / test.strip("`")
    assert test_file.is_file(), f"{loader}: {test} does not exist"
    source = test_file.read_text()
    for way in re.findall(r"`([a-z-]+)(?: --secure-boot)?`", ways):
        assert way in VIAS, f"{loader}: --via {way} is not a boot-test way"
        assert re.search(rf"\b{re.escape(way)}\b", source), f"{loader}: {test} never boots via {way}"
    if "`liveimg serve`" in ways:  # booted from liveimg serve on a network the test makes
        assert "lan.serve(" in source and "lan.boot(" in source, f"{loader}: {test} never boots from liveimg serve"
    if "--secure-boot" in ways:
        assert "secure_boot=True" in source or "--secure-boot" in source
        assert "ms.fd" in firmware
