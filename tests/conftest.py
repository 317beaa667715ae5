"""Test tiers: a test's directory decides its marker.

``tests/integration/`` is the integration tier (real libguestfs, real tools, sample
images), ``tests/e2e/`` the e2e tier (QEMU boots); everything else is a unit test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.path).relative_to(_HERE).parts
        tier = parts[0] if parts[0] in ("integration", "e2e") else "unit"
        item.add_marker(getattr(pytest.mark, tier))
