"""liveimg.progress: events, JSON lines and the terminal bar."""

from __future__ import annotations

import io
import json
import re

import pytest

from liveimg.progress import Event, JsonLines, Progress, StageLines, TerminalBar


def test_stage_events_in_order() -> None:
    events: list[Event] = []
    progress = Progress(events.append, rate=1e9)
    with progress.stage("rootfs", total=100, unit="bytes") as st:
        st.advance(40)
        st.advance(60)
    assert [e.event for e in events] == ["begin", "progress", "progress", "end"]
    assert [e.done for e in events] == [0, 40, 100, 100]
    assert events[-1].message == ""
    assert "rootfs" in progress.timings


def test_failed_stage_says_so() -> None:
    events: list[Event] = []
    progress = Progress(events.append)
    with pytest.raises(RuntimeError), progress.stage("dracut"):
        raise RuntimeError("boom")
    assert events[-1].event == "end"
    assert events[-1].message == "failed"


def test_progress_is_throttled_but_the_end_is_not() -> None:
    events: list[Event] = []
    progress = Progress(events.append, rate=0.001)
    with progress.stage("squashfs", total=1000) as st:
        for _ in range(999):
            st.advance(1)
        st.advance(1)  # reaching the total is always reported
    kinds = [e.event for e in events]
    assert kinds.count("progress") <= 2
    assert events[-2].done == 1000


def test_json_lines() -> None:
    out = io.StringIO()
    progress = Progress(JsonLines(out), rate=1e9)
    with progress.stage("pxe", total=2, unit="files") as st:
        st.update(1)
        st.message("writing configs")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["begin", "progress", "message", "end"]
    assert set(lines[0]) == {"event", "stage", "done", "total", "unit", "seconds", "message"}
    assert lines[1] == lines[1] | {"stage": "pxe", "done": 1, "total": 2, "unit": "files"}


def test_terminal_bar() -> None:
    bar = TerminalBar(io.StringIO(), width=10)
    line = bar.render(Event("progress", "squashfs", 512 * 1024**2, 1024**3, "bytes", 3.2))
    assert line == "squashfs [#####-----]  50.0% 512.0 MiB / 1.0 GiB 3 s"
    assert bar.render(Event("progress", "guest", 3, None, "files", 1.0)) == "guest 3 1 s"


def test_no_sink_discards() -> None:
    with Progress().stage("x", total=1) as st:
        st.advance(1)


def test_stage_lines_print_one_line_per_finished_stage_and_per_message() -> None:
    out = io.StringIO()
    progress = Progress(StageLines(out), rate=1e9)
    with progress.stage("squashfs", total=3 * 1024**2, unit="bytes") as st:
        for _ in range(3):
            st.advance(1024**2)
        st.message("wrote the fragment table")
    with pytest.raises(RuntimeError), progress.stage("dracut", unit="steps"):
        raise RuntimeError("boom")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3
    assert lines[0] == "squashfs: wrote the fragment table"
    assert re.fullmatch(r"squashfs: done in \d+\.\d s, 3\.0 MiB", lines[1])
    assert re.fullmatch(r"dracut: failed in \d+\.\d s", lines[2])


@pytest.mark.parametrize(
    ("argv", "tty", "sink"),
    [
        ([], True, TerminalBar),
        ([], False, StageLines),
        (["-q"], False, type(None)),
        (["--progress", "json"], True, JsonLines),
        (["--progress", "lines"], True, StageLines),
        (["--progress", "none"], True, type(None)),
    ],
)
def test_the_cli_chooses_a_bar_on_a_terminal_and_lines_in_a_pipe(
    argv: list[str], tty: bool, sink: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    from liveimg import cli

    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: tty)
    args = cli.build_parser().parse_args([*argv, "doctor"])
    assert type(cli._progress(args).sink) is sink
