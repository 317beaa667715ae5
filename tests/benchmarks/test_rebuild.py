"""The rebuild benchmark's own logic: comparing OUTDIRs, the summary, the report section (no builds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import cli, rebuild, report


def _outdir(root: Path, initramfs: bytes, manifest: str) -> Path:
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / "live-rootfs.squashfs.img").write_bytes(b"squashfs")
    (root / "initramfs-6.1.img").write_bytes(initramfs)
    (root / "pxelinux.cfg/default").write_text("DEFAULT linux\n")
    (root / "vmlinuz-link").symlink_to("initramfs-6.1.img")
    (root / rebuild.MANIFEST).write_text(manifest)
    return root


def test_digests_cover_every_artifact_but_the_manifest(tmp_path: Path) -> None:
    digests = rebuild.artifact_digests(_outdir(tmp_path / "a", b"initramfs", '{"stages": {"dracut": 1}}'))
    assert sorted(digests) == ["initramfs-6.1.img", "live-rootfs.squashfs.img", "pxelinux.cfg/default"]
    same = rebuild.artifact_digests(_outdir(tmp_path / "b", b"initramfs", '{"stages": {"dracut": 2}}'))
    assert rebuild.differences(digests, same) == []  # manifests differ (timings): not an artifact


def test_differences_name_each_file(tmp_path: Path) -> None:
    cold = rebuild.artifact_digests(_outdir(tmp_path / "a", b"initramfs", "{}"))
    warm_dir = _outdir(tmp_path / "b", b"initramfs, other bytes", "{}")
    (warm_dir / "extra.cfg").write_text("x")
    (warm_dir / "pxelinux.cfg/default").unlink()
    assert rebuild.differences(cold, rebuild.artifact_digests(warm_dir)) == [
        "pxelinux.cfg/default: only in the cold build",
        "extra.cfg: only in the warm build",
        "initramfs-6.1.img: different bytes",
    ]


def _case(wall: float, cpu: float) -> dict[str, Any]:
    return {"wall": wall, "rusage": {"cpu": cpu}, "rss": {"tree_peak_mib": 700.0}, "cache": {"squashfs": {"hits": 9}}}


def _result() -> dict[str, Any]:
    rounds = [
        {"round": 0, "cold": _case(200.0, 300.0), "prime": _case(210.0, 310.0), "warm": _case(60.0, 80.0)},
        {"round": 1, "cold": _case(220.0, 320.0), "prime": _case(205.0, 300.0), "warm": _case(50.0, 70.0)},
        {"round": 2, "cold": _case(180.0, 310.0), "prime": _case(200.0, 305.0), "warm": _case(70.0, 90.0)},
    ]
    return {
        "benchmark": "rebuild",
        "command": "python -m benchmarks rebuild",
        "commit": {"short": "abc"},
        "machine": {"cpu": "CPU", "cores": 2, "ram_bytes": 24 << 30, "kernel": "6.1"},
        "load": {"before": [0.1]},
        "images": {"update": {"path": "/x/atomic-update.raw"}},
        "update": {"changed_bytes": 2 << 20, "added_bytes": 1 << 20, "removed_bytes": 1 << 20, "changed": 20},
        "liveimg_options": ["build", "--cache DIR"],
        "source_date_epoch": rebuild.SOURCE_DATE_EPOCH,
        "liveimg_user": {"uid": 123456789, "groups": [], "capabilities": "none"},
        "rounds": rounds,
        "summary": rebuild.summarize(rounds),
    }


def test_summary_has_medians_spread_and_the_ratio() -> None:
    summary = _result()["summary"]
    assert summary["cold"]["wall"] == {"n": 3, "min": 180.0, "median": 200.0, "max": 220.0}
    assert summary["warm"]["cpu"] == {"n": 3, "min": 70.0, "median": 80.0, "max": 90.0}
    assert summary["prime"]["wall"]["median"] == 205.0
    assert summary["warm_over_cold"] == {"wall": 60.0 / 200.0, "cpu": 80.0 / 310.0}


def test_report_section() -> None:
    text = report.render({"rebuild": _result()}, plot_name=None)
    assert "### Rebuild after an update" in text
    assert (
        "| update, empty cache | 200 s (180 s to 220 s) | 310 s (300 s to 320 s) | 700 MiB | squashfs: hits=9 |" in text
    )
    assert "| update, cache of the atomic build | 60.0 s (50.0 s to 70.0 s) |" in text
    assert "Warm / cold: wall 0.30×, CPU 0.26×." in text
    assert "2.0 MiB rewritten in 20 files" in text
    assert "as an unprivileged user (uid 123456789, no group, no capability)" in text


def test_the_cli_runs_it() -> None:
    args = cli.parser().parse_args(["rebuild", "--rounds", "3"])
    assert args.which == ["rebuild"] and "rebuild" in cli.ORDER
