"""The atomic-iscsi sample's builder (scripts/sample_iscsi.py): its keys and its cloud-init configuration.

The build itself is exercised by tests/e2e/test_live_iscsi.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from liveimg.iscsi import IscsiStorage
from liveimg.pxe import CloudInitSeed

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture(scope="module")
def sample_iscsi() -> ModuleType:
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("sample_iscsi", SCRIPTS / "sample_iscsi.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def test_it_leaves_the_other_samples_keys_alone(sample_iscsi: ModuleType) -> None:
    si = sample_iscsi.si
    # the other samples' key covers sample_image.py and make-sample-image only, not this builder
    assert [p.name for p in si.BUILDER_FILES] == ["sample_image.py", "make-sample-image"]
    assert "atomic-iscsi" not in si.VARIANTS
    assert not set(sample_iscsi.PACKAGES) & set(si.BASE_PACKAGES)


def test_its_keys_follow_what_makes_them(sample_iscsi: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    layer, image = sample_iscsi.layer_key(), sample_iscsi.image_key()
    assert len(layer) == len(image) == 16 and layer != image
    monkeypatch.setattr(sample_iscsi, "PACKAGES", (*sample_iscsi.PACKAGES, "htop"))
    assert sample_iscsi.layer_key() != layer
    monkeypatch.undo()
    monkeypatch.setattr(sample_iscsi.si, "base_key", lambda: "0" * 16)
    assert sample_iscsi.layer_key() != layer
    monkeypatch.setattr(sample_iscsi.si, "builder_key", lambda: "0" * 16)
    assert sample_iscsi.image_key() != image


#: The cloud-init module each key of a liveimg seed needs (cloud-init 22.4's module names).
MODULE_OF = {
    "hostname": "set_hostname", "preserve_hostname": "set_hostname", "users": "users_groups",
    "chpasswd": "set_passwords", "ssh_pwauth": "set_passwords", "write_files": "write_files", "runcmd": "runcmd",
    "ssh_authorized_keys": "users_groups", "disable_root": "users_groups",
}  # fmt: skip


def test_cloud_init_runs_only_the_nocloud_datasource_and_what_a_seed_needs(sample_iscsi: ModuleType) -> None:
    cfg = yaml.safe_load(sample_iscsi.CLOUD_CFG)
    assert cfg["datasource_list"] == ["NoCloud"]
    assert cfg["network"] == {"config": "disabled"}
    modules = {m for key in ("cloud_init_modules", "cloud_config_modules", "cloud_final_modules") for m in cfg[key]}
    seed = CloudInitSeed(
        hostname="node1", ssh_authorized_keys=("ssh-ed25519 AAAA k",), password="pw", write_files=(("/etc/x", "x"),),
        runcmd=("true",), iscsi=IscsiStorage("192.0.2.10", "iqn.2016-04.com.example:s"),
    )  # fmt: skip
    needed = {MODULE_OF[key] for key in seed.cloud_config("x")}
    assert needed <= modules, needed - modules
    assert "scripts_user" in modules  # runcmd only writes the script; scripts_user runs it
    assert len(modules) <= 10
