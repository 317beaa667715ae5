"""The README's "How the code is laid out" is the code's map: what it names exists and is so."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from liveimg import pipeline
from liveimg.layouts import LAYOUTS

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "liveimg"


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## How the code is laid out\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_every_module_the_map_names_exists() -> None:
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", section()))
    assert {"pipeline.py", "stages/pack.py", "layouts/"} <= {n.removeprefix("liveimg/") for n in named}
    for name in named:
        top = name.split("/", 1)[0]
        base = REPO if top in {"liveimg", "tests", "benchmarks", "scripts"} else PACKAGE
        assert (base / name).exists(), f"the README's map names {name}, which does not exist"


def test_the_stage_table_is_pipeline_stages_in_order() -> None:
    rows = re.findall(r"^\| (\w+) \| `stages/(\w+)\.py` \|", section(), flags=re.MULTILINE)
    assert rows == [(m, m) for m in (stage.__module__.rsplit(".", 1)[1] for stage in pipeline.STAGES)]
    assert all(stage.__module__ == f"liveimg.stages.{stage.__module__.rsplit('.', 1)[1]}" for stage in pipeline.STAGES)


def test_every_layout_is_a_class_in_layouts_registered_by_name() -> None:
    assert LAYOUTS
    for name, layout in LAYOUTS.items():
        assert layout.name == name
        assert layout.__module__.startswith("liveimg.layouts."), layout


#: Calls that start a program.  The portal (the process run.py starts to drop privileges, which
#: then becomes the tool) is the one other place that may.
STARTERS = {
    "subprocess": {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"},
    "os": {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "execv", "execve", "execvp",
           "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnl"},
}  # fmt: skip
MAY_START = {"run.py", "_portal.py"}


def test_programs_are_started_only_by_run_py() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            if isinstance(owner, ast.Name) and node.func.attr in STARTERS.get(owner.id, ()):
                found.append((rel, node.lineno, f"{owner.id}.{node.func.attr}"))
    assert [f for f in found if f[0] not in MAY_START] == []
    assert {f[0] for f in found} <= MAY_START and "run.py" in {f[0] for f in found}
