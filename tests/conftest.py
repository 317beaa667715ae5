"""Test tiers: a test's directory decides its marker.

``tests/integration/`` is the integration tier (real libguestfs, real tools, sample
images), ``tests/e2e/`` the e2e tier (QEMU boots); everything else is a unit test.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


#: The e2e files that take longest, longest first (as timed in .ci/run): xdist hands whole files
#: to its two workers in collection order (with ``--no-loadscope-reorder``, as ``make e2e`` runs
#: it: else the files with the most tests go first), so starting the long ones first keeps one
#: worker from finishing a long file alone at the end.  Files not named here follow, in their
#: usual order.
E2E_LONGEST_FIRST = (
    "test_live_iscsi.py",
    "test_live_serve.py",
    "test_live_nbd.py",
    "test_live_atomic.py",
    "test_live_verify.py",
    "test_live_iso.py",
    "test_live_2deploy.py",
    "test_live_uefi.py",
    "test_live_erofs.py",
    "test_live_xfs_lvm.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """One build cache for the whole run, shared by its workers, removed at its end.

    Builds share their compressed blocks and initramfs within a run (as a user's builds do), never
    with an earlier run's or the user's own cache: what a test measures does not depend on what
    ran on this machine before.  A test that needs a cold build passes ``--no-cache`` or its own
    ``--cache``; ``$LIVEIMG_CACHE`` set by the caller is kept.
    """
    if hasattr(config, "workerinput") or os.environ.get("LIVEIMG_CACHE"):
        return  # an xdist worker inherits the controller's
    directory = tempfile.mkdtemp(prefix="liveimg-tests-cache-", dir="/var/tmp")
    os.environ["LIVEIMG_CACHE"] = directory
    config.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Free space where the tests write: when a tool is stopped because a filesystem is full, the
    run's header says what there was to begin with."""
    lines = []
    for path in ("/tmp", "/var/tmp", str(Path.home())):
        st = os.statvfs(path)
        lines.append(f"{path}: {st.f_bavail * st.f_frsize / 2**30:.1f} GiB free")
    return ["disk: " + ", ".join(lines)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(item.path).relative_to(_HERE).parts
        tier = parts[0] if parts[0] in ("integration", "e2e") else "unit"
        item.add_marker(getattr(pytest.mark, tier))

    def rank(item: pytest.Item) -> int:
        path = Path(item.path)
        if path.parent != _HERE / "e2e":
            return -1  # the other tiers first, as collected
        name = path.name
        return E2E_LONGEST_FIRST.index(name) if name in E2E_LONGEST_FIRST else len(E2E_LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests stay together and in order


# Sample images shared by the whole suite: built once (scripts/make-sample-image caches them
# across runs), requested lazily so that unit runs never build anything.


@pytest.fixture(scope="session")
def atomic_image() -> Path:
    """Raw GPT disk: /boot ext4 + / ext4 with one ostree deployment (os debian-atomic)."""
    from tests.samples import sample_image

    return sample_image("atomic")


@pytest.fixture(scope="session")
def xfs_lvm_image() -> Path:
    """Raw GPT disk: /boot ext4 + LVM PV with / on xfs in LV atomicos/root (one ostree deployment)."""
    from tests.samples import sample_image

    return sample_image("atomic-xfs-lvm")


@pytest.fixture(scope="session")
def twodeploy_image() -> Path:
    """Raw GPT disk like atomic_image, with two deployments whose boot checksums differ."""
    from tests.samples import sample_image

    return sample_image("atomic-2deploy")


@pytest.fixture(scope="session")
def update_image() -> Path:
    """The atomic sample's commit deployed, then an upgraded commit deployed on top as the default."""
    from tests.samples import sample_image

    return sample_image("atomic-update")


@pytest.fixture(scope="session")
def classic_image() -> Path:
    """Raw GPT disk: one ext4 root with the kernel and initramfs in /boot, no ostree."""
    from tests.samples import sample_image

    return sample_image("classic")


@pytest.fixture(scope="session")
def iscsi_image() -> Path:
    """The atomic sample's system with cloud-init (NoCloud), open-iscsi and podman (scripts/sample_iscsi.py)."""
    from tests.samples import sample_image

    return sample_image("atomic-iscsi")


@pytest.fixture(scope="session")
def atomic_qcow2() -> Path:
    """The atomic sample as qcow2."""
    from tests.samples import sample_image

    return sample_image("atomic", "qcow2")


@pytest.fixture
def default_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP as a fresh Python process has them (pytest may have its own), restored after."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
