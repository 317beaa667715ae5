"""Rendering of the benchmark results: Markdown between markers, the plot, fits and freshness (no runs)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness, report, scaling, stages
from tests.support import need_module

_STAGES = ("guest", "rootfs", "squashfs", "dracut", "other", "total")


def _side(values: dict[str, float], groups: dict[str, float], **more: Any) -> dict[str, Any]:
    return {
        "wall": values["total"],
        "stages": values,
        **more,
        "rss": {"tree_peak_mib": sum(groups.values()), "groups": groups, "single_peak_mib": max(groups.values())},
        "rusage": {"maxrss_mib": max(groups.values()), "cpu": 380.0},
        "rss_by_stage": {"squashfs": {"tree": 40.0, "self": 40.0}},
        "artifacts": {"live-rootfs.squashfs.img": 400 << 20, "initramfs-6.1.img": 60 << 20},
        "rootfs": {"size": 1 << 30},
        "rootfs_size": 1 << 30,
    }


def _timeline(*spans: tuple[str, float, float]) -> list[dict[str, Any]]:
    """liveimg's progress stages as :func:`benchmarks.e2e.parse_progress` gives them."""
    return [{"stage": st, "begin": b, "end": e, "seconds": round(e - b, 2)} for st, b, e in spans]


def _results() -> dict[str, dict[str, Any]]:
    from benchmarks import e2e

    ours = dict(zip(_STAGES, (30.0, 8.0, 100.0, 60.0, 4.0, 202.0), strict=True))
    ref = dict(zip(_STAGES, (0.2, 20.0, 150.0, 160.0, 2.0, 332.2), strict=True))
    # One stage after another, as before the dracut job ran beside squashfs; with the appliance.
    timeline = _timeline(
        ("appliance", 0.0, 27.0),
        ("guest", 27.0, 30.0),
        ("rootfs", 30.0, 38.0),
        ("squashfs", 38.0, 138.0),
        ("dracut", 138.0, 198.0),
    )
    steps = {"appliance": 27.0, "guest": 3.0, "rootfs": 8.0, "squashfs": 100.0, "dracut": 60.0}
    lv = [_side(ours, {"self": 60.0, "qemu": 600.0, "children": 30.0}, steps=steps, timeline=timeline)]
    lx = [_side(ref, {"self": 13.0, "children": 1500.0})]
    e2e_result = {
        "benchmark": "e2e",
        "command": "python -m benchmarks e2e",
        "quick": False,
        "commit": {"short": "abc"},
        "machine": {"cpu": "CPU", "cores": 2, "ram_bytes": 24 << 30, "kernel": "6.1"},
        "load": {"before": [0.1]},
        "accelerator": {"accel": "tcg", "reason": "test"},
        "image": {"path": "/x/atomic.raw", "apparent_bytes": 1, "allocated_bytes": 1},
        "liveimg_options": ["build (defaults)"],
        "liveimg": lv,
        "lorax": lx,
        "summary": {"liveimg": e2e.summarize(lv), "lorax": e2e.summarize(lx)},
        "tcg": e2e.tcg_handicap(
            {"steps": {"appliance": 27.0, "guest": 3.0}, "stages": ours},
            {"guest_seconds": 0.2, "rootfs_seconds": 3.0, "kvm_launch_seconds": 6.0},
        ),
    }
    cases = [
        {
            "input": "image",
            "codec": "xz-bcj",
            "threads": 2,
            "tool": "mksquashfs",
            "wall": 300.0,
            "cpu": 480.0,
            "rss_mib": 1500.0,
            "size": 400 << 20,
        },
        {
            "input": "image",
            "codec": "xz-bcj",
            "threads": 2,
            "tool": "liveimg",
            "wall": 240.0,
            "cpu": 470.0,
            "rss_mib": 30.0,
            "size": 399 << 20,
        },
    ]
    squash = {
        "benchmark": "squashfs-core",
        "source": "benchmarks/results/squashfs-1.json",
        "rerun": False,
        "report": {"cases": cases, "commit": "abc", "command": "python -m benchmarks.squashfs"},
    }
    scale_cases = [
        {
            "stage": "squashfs",
            "tool": "liveimg",
            "codec": "zstd",
            "threads": t,
            "data_gib": g,
            "wall": g * (100 if t == 1 else 55) + 1,
        }
        for g in (0.5, 1, 2, 4)
        for t in (1, 2)
    ]
    scale = {
        "benchmark": "scaling",
        "inputs": {"0.5": {"files": 10}},
        "fits": scaling.fits(scale_cases),
        "speedups": scaling.speedups(scale_cases),
    }
    raw = {
        "sample": "/x/atomic.raw",
        "kver": "6.1",
        "sandbox_dracut_xz": {"seconds": 150.0, "bytes": 60 << 20},
        "sandbox_dracut_no_compress": {"seconds": 40.0, "bytes": 200 << 20},
        "host_compression": {"xz threads=all": {"seconds": 30.0, "bytes": 58 << 20, "command": "xz -T0"}},
    }
    dracut = {
        "benchmark": "dracut",
        "raw": raw,
        "rows": stages.dracut_rows(raw),
        "measured": {"rss": {"tree_peak_mib": 300.0}},
    }
    return {"e2e": e2e_result, "squashfs-core": squash, "scaling": scale, "dracut": dracut}


def test_render_has_every_table_and_the_targets() -> None:
    text = report.render(_results())
    assert text.startswith(report.BEGIN) and text.rstrip().endswith(report.END)
    assert "| total | 202 s / 202 s | - | 202 s | 332 s / 332 s | 0.61× | 173 s | 0.52× |" in text
    assert "| dracut | 60.0 s / 60.0 s | 0.0 s | 60.0 s | 160 s / 160 s | 0.38× |" in text
    assert "runs stages beside each other" not in text  # nothing overlapped
    assert "launch 27.0 s + inspection 3.0 s" in text
    assert "| end-to-end wall ≤ 0.5× lorax's way (TCG; liveimg as root) | 0.61× | not met |" in text
    # 380 CPU seconds on 2 cores: 190 s at best; 202 s is within 10 % of that.
    assert "the CPU limit (380 CPU s / 2 cores = 190 s) | 202 s = 1.06× | met |" in text
    assert "| squashfs stage ≤ 1.0× mksquashfs (xz + BCJ, 2 threads) | 0.80×, size 0.9975 | met |" in text
    assert "| peak RSS ≤ 512 MiB: liveimg's own process | 60 MiB | met |" in text
    assert "QEMU, 600 MiB) | 690 MiB | not met |" in text
    assert "| dracut --no-compress + host xz threads=all | 40.0 s | 30.0 s | 70.0 s | 58.0 MiB |" in text
    assert "| zstd | 4 GiB | 401 s | 221 s | 1.81× |" in text
    assert "results/benchmarks.png" in text


def test_targets_at_equal_work_and_for_the_rebuild() -> None:
    found = _results()
    cases = found["squashfs-core"]["report"]["cases"]
    for tool, wall, size in (("mksquashfs", 300.0, 400 << 20), ("liveimg", 310.0, (400 << 20) - 4096)):
        cases.append({"input": "image", "codec": "xz-bcj-exhaustive", "threads": 2, "tool": tool, "wall": wall,
                      "cpu": 600.0, "rss_mib": 40.0, "size": size})  # fmt: skip
    found["rebuild"] = {"summary": {"cold": {"wall": {"median": 150.0}}, "warm": {"wall": {"median": 31.0}}}}
    text = report.targets_section(found)
    assert any("equal work" in row and "| 1.03×, size 1.0000 | not met |" in row for row in text), text
    assert "| rebuild of the update sample with a warm cache ≥ 5× faster than cold, same bytes (medians) | 4.84× " \
        "(150 s / 31.0 s) | not met |" in text  # fmt: skip
    found["rebuild"]["summary"]["warm"]["wall"]["median"] = 25.0
    assert any("| 6.00× (150 s / 25.0 s) | met |" in row for row in report.targets_section(found))


def test_render_says_who_ran_liveimg() -> None:
    found = _results()
    text = report.render(found)
    assert "liveimg ran as root; lorax's way as root." in text  # results made before liveimg_user existed
    assert "lorax's way (TCG; liveimg as root) |" in text
    found["e2e"]["liveimg_user"] = {"uid": 123456789, "groups": ["kvm"], "capabilities": "none"}
    text = report.render(found)
    assert "liveimg ran as an unprivileged user (uid 123456789, group kvm, no capability); lorax's way as root." in text
    assert "lorax's way (TCG; liveimg unprivileged) |" in text
    assert "dracut in liveimg's user-namespace sandbox, run as root," in text


def _native_overlapped(found: dict[str, dict[str, Any]], *, recorded: bool) -> dict[str, Any]:
    """``found``'s e2e result with its liveimg round made native (no appliance) and its dracut job
    beside the squashfs stage, as builds are since 7b7d973; ``recorded``: with the fields new runs
    record (else as the results written before them)."""
    from benchmarks import e2e

    timeline = _timeline(
        ("guest", 0.4, 0.5),
        ("rootfs", 0.5, 2.0),
        ("squashfs", 2.0, 130.0),
        ("dracut", 2.1, 15.0),
        ("compress initramfs", 15.0, 69.0),
        ("pxe", 138.0, 138.1),
    )
    ours = {"guest": 0.1, "rootfs": 1.5, "squashfs": 128.0, "dracut": 70.0, "other": 8.0, "total": 139.0}
    run = _side(
        ours,
        {"self": 100.0, "children": 40.0},
        steps={"guest": 0.1, "rootfs": 1.5, "squashfs": 128.0, "dracut": 12.9, "compress initramfs": 54.0},
        timeline=timeline,
    )
    if recorded:
        clock = e2e.wall_clock_stages(timeline, e2e.LIVEIMG_STAGES, 139.0)
        run |= {"wall_clock_stages": clock["stages"], "beside": clock["beside"], "appliance_used": False}
    result = found["e2e"]
    result["liveimg"] = [run]
    result["tcg"] = e2e.tcg_handicap(run, result["tcg"]["host_equivalents"])
    return result


def test_render_a_native_build_with_dracut_beside_squashfs() -> None:
    found = _results()
    _native_overlapped(found, recorded=True)
    text = report.render(found)
    # The dracut stage (70 s in the manifest) ran 66.9 s beside squashfs: none of it on the wall clock.
    assert "| dracut | 70.0 s / 70.0 s | 66.9 s | 0.0 s | 160 s / 160 s | 0.44× |" in text
    assert "| squashfs | 128 s / 128 s | 66.9 s | 128 s |" in text
    assert "runs stages beside each other (dracut 66.9 s, squashfs 66.9 s, medians)" in text
    assert "The TCG handicap: none in this run" in text and "with KVM (est.)" not in text
    assert "Peak RSS per stage (MiB, first round; stages that ran beside each other share samples)" in text
    assert "the whole tree (no appliance ran) | 140 MiB | met |" in text


def test_render_an_older_result_of_a_native_overlapped_build() -> None:
    found = _results()
    _native_overlapped(found, recorded=False)
    found["e2e"]["tcg"].pop("appliance_used")
    text = report.render(found)
    assert "| dracut | 70.0 s / 70.0 s | 66.9 s | 0.0 s |" in text  # worked out from the timeline
    assert "The TCG handicap: none in this run" in text
    assert "Peak RSS per stage: not shown for this result" in text


def test_render_without_results() -> None:
    assert "No results yet" in report.render({}, plot_name=None)


def test_update_readme_keeps_the_rest(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nProtocol text.\n")
    report.update_readme(readme, report.render({}, None))
    first = readme.read_text()
    assert first.startswith("# Benchmarks\n\nProtocol text.\n\n" + report.BEGIN)
    readme.write_text(first + "\n## Hand-written findings\n")
    report.update_readme(readme, report.render(_results(), None))
    text = readme.read_text()
    assert text.count(report.BEGIN) == 1 and "Protocol text." in text and text.endswith("## Hand-written findings\n")
    assert "No results yet" not in text and "| total |" in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    need_module("matplotlib", "the test extra: pip install -e '.[test]'")
    dest = report.plot(_results(), tmp_path / "b.png")
    assert dest is not None and dest.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.plot({}, tmp_path / "empty.png") is not None


def test_scaling_fit_and_speedup() -> None:
    cases = [
        {"stage": "squashfs", "tool": "liveimg", "codec": "xz-bcj", "threads": 2, "data_gib": g, "wall": w}
        for g, w in ((0.5, 60.0), (1, 110.0), (2, 210.0), (4, 410.0))
    ]
    (fit,) = scaling.fits(cases)
    assert fit["b"] == pytest.approx(100.0) and fit["a"] == pytest.approx(10.0) and fit["linear"] is True
    assert scaling.speedups(cases) == []


def test_prefix_for_takes_files_in_order() -> None:
    files = [("a", 10), ("b", 10), ("c", 10)]
    assert scaling.prefix_for(files, 15) == 2 and scaling.prefix_for(files, 30) == 3
    with pytest.raises(SystemExit):
        scaling.prefix_for(files, 31)


def test_squashfs_results_are_fresh_only_for_the_current_code() -> None:
    head = subprocess.run(
        ["git", "-C", str(harness.REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert stages.is_fresh({"commit": head, "cases": []})
    assert stages.is_fresh({"commit": "x", "cases": [{"commit": head}]})
    assert not stages.is_fresh({"commit": "0" * 40, "cases": []})


def test_dracut_rows_add_host_compression_to_dracut() -> None:
    rows = stages.dracut_rows(_results()["dracut"]["raw"])
    assert [r["total"] for r in rows] == [150.0, 40.0, 70.0]
