"""The tests' iSCSI target (tests/iscsi_target.py), checked from the host as the guest will see it.

A SendTargets discovery through the relays answers the guest's portal, 10.0.2.100:3260 -- the
address the guest's login will use -- and the name ACL lets in the named initiator only.
"""

from __future__ import annotations

from pathlib import Path

from tests.iscsi_target import PORTAL_ADDR, PORTAL_PORT, login_status, send_targets, tgt_target
from tests.support import need, need_root

IQN = "iqn.2026-12.invalid.liveimg:target-check"
INITIATOR = "iqn.2026-12.invalid.liveimg:allowed"


def test_the_target_answers_with_the_guest_s_portal(tmp_path: Path) -> None:
    need_root()
    need("tgtd", "tgtadm", "socat", "unshare", "nsenter")
    lun = tmp_path / "lun.img"
    with open(lun, "wb") as f:
        f.truncate(64 << 20)
    with tgt_target(tmp_path, IQN, lun, initiator=INITIATOR) as target:
        shown = target.tgtadm("--mode", "target", "--op", "show")
        assert f"Target 1: {IQN}" in shown and str(lun) in shown and INITIATOR in shown
        answer = send_targets("127.0.0.1", target.host_port, INITIATOR)
        assert answer == [("TargetName", IQN), ("TargetAddress", f"{PORTAL_ADDR}:{PORTAL_PORT},1")]
        # the name ACL: the allowed initiator may log in; another does not see the target, nor log in
        assert login_status("127.0.0.1", target.host_port, INITIATOR, IQN) == (0, 0)
        other = "iqn.2026-12.invalid.liveimg:other"
        assert send_targets("127.0.0.1", target.host_port, other) == []
        assert login_status("127.0.0.1", target.host_port, other, IQN)[0] == 2  # an initiator error
    assert lun.stat().st_blocks == 0  # nothing wrote to the LUN
