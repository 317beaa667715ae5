"""Parsing and mapping of the end-to-end benchmark's measurements (no benchmark runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import e2e
from benchmarks.harness import Line


def _event(kind: str, stage: str, seconds: float = 0.0) -> str:
    return json.dumps(
        {"event": kind, "stage": stage, "done": 0, "total": None, "unit": "", "seconds": seconds, "message": ""}
    )


def test_progress_events_become_stage_runs() -> None:
    lines = [
        Line(0.5, _event("begin", "appliance")),
        Line(20.5, _event("end", "appliance", 20.0)),
        Line(20.6, "not json"),
        Line(20.7, _event("begin", "guest")),
        Line(22.7, _event("end", "guest", 2.0)),
        Line(30.0, '{"event": "result", "outdir": "x"}'),
    ]
    runs = e2e.parse_progress(lines)
    assert [(r["stage"], r["begin"], r["end"], r["seconds"]) for r in runs] == [
        ("appliance", 0.5, 20.5, 20.0),
        ("guest", 20.7, 22.7, 2.0),
    ]


def test_map_stages_puts_the_unaccounted_time_in_other() -> None:
    parts = {"appliance": 20.0, "guest": 2.0, "rootfs": 8.0, "squashfs": 100.0, "dracut": 50.0, "pxe": 0.5}
    stages = e2e.map_stages(parts, e2e.LIVEIMG_STAGES, wall=190.0)
    assert stages == {"guest": 22.0, "rootfs": 8.0, "squashfs": 100.0, "dracut": 50.0, "other": 10.0, "total": 190.0}
    lorax = e2e.map_stages(
        {"find partitions": 0.1, "mkfs + cp -a": 12.0, "fsck -E discard": 1.0}, e2e.LORAX_STEPS, wall=14.0
    )
    assert lorax["guest"] == 0.1 and lorax["rootfs"] == 13.0 and lorax["other"] == pytest.approx(0.9)


def test_stage_windows_run_to_the_next_stage() -> None:
    windows = e2e.stage_windows(
        [("guest", 0.5), ("guest", 20.7), ("rootfs", 23.0), ("other", 24.0), ("squashfs", 31.0)], wall=40.0
    )
    assert windows == {"guest": (0.5, 23.0), "rootfs": (23.0, 31.0), "squashfs": (31.0, 40.0)}


_BESIDE = [
    {"stage": "rootfs", "begin": 0.5, "end": 2.0},
    {"stage": "squashfs", "begin": 2.0, "end": 130.0},
    {"stage": "dracut", "begin": 2.1, "end": 15.0},
    {"stage": "compress initramfs", "begin": 15.0, "end": 69.0},
    {"stage": "pxe", "begin": 138.0, "end": 138.1},
]


def test_stage_intervals_are_each_stages_own_span() -> None:
    spans = e2e.stage_intervals(_BESIDE, e2e.LIVEIMG_STAGES)
    assert spans == {"rootfs": (0.5, 2.0), "squashfs": (2.0, 130.0), "dracut": (2.1, 69.0)}


def test_wall_clock_gives_each_second_to_the_stage_that_began_first() -> None:
    clock = e2e.wall_clock_stages(_BESIDE, e2e.LIVEIMG_STAGES, wall=139.0)
    stages = clock["stages"]
    assert stages["squashfs"] == 128.0 and stages["dracut"] == 0.0 and stages["rootfs"] == 1.5
    assert stages["other"] == pytest.approx(139.0 - 1.5 - 128.0) and stages["total"] == 139.0
    assert sum(v for k, v in stages.items() if k != "total") == pytest.approx(139.0)
    assert clock["beside"] == {"rootfs": 0.0, "squashfs": 66.9, "dracut": 66.9}
    # One after another: each stage keeps its own time.
    alone = [{"stage": "squashfs", "begin": 0.0, "end": 10.0}, {"stage": "dracut", "begin": 10.0, "end": 15.0}]
    assert e2e.wall_clock_stages(alone, e2e.LIVEIMG_STAGES, wall=16.0)["stages"]["dracut"] == 5.0


def test_no_tcg_handicap_without_the_appliance() -> None:
    run = {"steps": {"guest": 0.01, "rootfs": 1.4}, "stages": {"guest": 0.01, "rootfs": 1.4, "total": 139.0}}
    host = {"guest_seconds": 0.08, "rootfs_seconds": 2.1, "kvm_launch_seconds": 6.0}
    assert e2e.tcg_handicap(run, host) == {"appliance_used": False, "host_equivalents": host}
    assert e2e.tcg_handicap({**run, "appliance_used": True, "steps": {"appliance": 20.0}}, host) is not None


def test_last_json_object_after_tool_output() -> None:
    text = 'Parallel mksquashfs: Using 2 processors\n{not json\n{\n  "steps": {"dracut": 1.5}\n}\n'
    assert e2e.last_json_object(text) == {"steps": {"dracut": 1.5}}
    with pytest.raises(ValueError):
        e2e.last_json_object("no object here")


def test_command_seconds_sums_debug_lines_in_a_window() -> None:
    lines = [
        Line(1.0, "DEBUG liveimg.run:   e2fsck exited 0 after 1.5 s"),
        Line(2.0, "DEBUG liveimg.run:   resize2fs exited 0 after 0.5 s"),
        Line(9.0, "DEBUG liveimg.run:   mksquashfs exited 0 after 7.0 s"),
    ]
    assert e2e._command_seconds(lines, 0.0, 5.0) == 2.0


def test_tcg_handicap_estimate() -> None:
    run = {
        "steps": {"appliance": 30.0, "guest": 3.0},
        "stages": {"guest": 33.0, "rootfs": 8.0, "squashfs": 100.0, "dracut": 60.0, "other": 4.0, "total": 205.0},
    }
    host = {"guest_seconds": 0.2, "rootfs_seconds": 3.0, "kvm_launch_seconds": 6.0}
    tcg = e2e.tcg_handicap(run, host)
    assert tcg["kvm_estimate"]["guest"] == 6.2 and tcg["kvm_estimate"]["rootfs"] == 3.0
    assert tcg["kvm_estimate"]["total"] == pytest.approx(205.0 - 26.8 - 5.0)
    assert tcg["rootfs_in_appliance"] == 5.0 and tcg["kvm_estimate"]["squashfs"] == 100.0


def test_kvm_groups_is_the_group_that_may_read_and_write_the_device(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.touch()
    if os.geteuid() == 0:
        os.chown(device, -1, 4242)
    gid = device.stat().st_gid
    device.chmod(0o660)
    assert e2e.kvm_groups(str(device)) == ((gid,) if gid != 0 else ())
    device.chmod(0o640)  # the group may read only: it cannot run a VM
    assert e2e.kvm_groups(str(device)) == ()
    assert e2e.kvm_groups(str(tmp_path / "missing")) == ()
