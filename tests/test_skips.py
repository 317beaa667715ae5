"""A test skips only where the README says it may.

Two ways to skip exist, both in tests/support.py: :func:`tests.support.unavailable` (and the
``need*`` helpers built on it), which fails instead under ``CI=true``, and
:func:`tests.support.opt_in`, for the tests the README lists as opt-in.  Any other skip in the
suite -- ``pytest.skip``, ``pytest.importorskip``, ``pytest.mark.skip``/``skipif``,
``pytest.xfail`` -- would be a silent skip in CI, so this test refuses it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support import OPT_IN

TESTS = Path(__file__).resolve().parent
README = TESTS.parent / "README.md"
SKIPPERS = {"skip", "importorskip", "skipif", "xfail"}


def _skip_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in SKIPPERS:
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_test_skips_outside_the_support_helpers() -> None:
    offenders = [
        call for path in sorted(TESTS.rglob("*.py")) if path.name != "support.py" for call in _skip_calls(path)
    ]
    assert offenders == [], "skip through tests.support.unavailable/need*/opt_in, which fail in CI:\n" + "\n".join(
        offenders
    )


def test_the_checker_sees_a_skip(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\n\n\n@pytest.mark.skipif(True, reason='')\ndef test_x():\n    pytest.importorskip('x')\n"
    )
    assert len(_skip_calls(sample)) == 2


def test_every_opt_in_test_is_in_the_readme_and_used() -> None:
    readme = README.read_text()
    section = readme[readme.index("### Opt-in tests") :]
    section = section[: section.find("\n#", 1)]
    listed = set(re.findall(r"`(LIVEIMG_TEST_[A-Z_]+)=1`", section))
    assert listed == set(OPT_IN), "README's 'Opt-in tests' and tests.support.OPT_IN differ"
    used = {
        name
        for path in TESTS.rglob("*.py")
        if path.name != "support.py"
        for name in re.findall(r"opt_in\(\"([A-Z_]+)\"\)", path.read_text())
    }
    assert used == set(OPT_IN), "an OPT_IN entry no test uses, or a test using an unlisted one"
