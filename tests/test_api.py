"""`import liveimg` is the public API: what it exports, documented, and what the README uses of it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import liveimg

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_public_name_exists_and_is_documented() -> None:
    assert len(set(liveimg.__all__)) == len(liveimg.__all__)
    for name in liveimg.__all__:
        value = getattr(liveimg, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), f"liveimg.{name} has no docstring"


def test_the_readme_uses_only_public_names() -> None:
    text = README.read_text()
    section = text[text.index("## Using it from Python") :]
    code = section[section.index("```python\n") : section.index("\n```\n")]
    used = set(re.findall(r"\bliveimg\.(\w+)", code))
    assert used and used <= set(liveimg.__all__), used - set(liveimg.__all__)
    assert "from liveimg." not in code


def test_import_liveimg_is_light() -> None:
    """The library loads without the libguestfs bindings (imported when an appliance starts)."""
    code = "import sys, liveimg; print(sorted(m for m in ('guestfs', 'libarchive', 'yaml') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "guestfs" not in done.stdout, done.stdout
