"""ostree physical roots: BLS entries (:mod:`.bls`) and deployments (:mod:`.deployments`)."""

from __future__ import annotations

from liveimg.ostree.bls import BootEntry, LoaderDir, find_loader, parse_entry, read_entries, sort_entries, strverscmp
from liveimg.ostree.deployments import (
    Deployment,
    DeploymentNotFound,
    list_deployments,
    parse_ostree_arg,
    select_deployment,
)

__all__ = [
    "BootEntry",
    "Deployment",
    "DeploymentNotFound",
    "LoaderDir",
    "find_loader",
    "list_deployments",
    "parse_entry",
    "parse_ostree_arg",
    "read_entries",
    "select_deployment",
    "sort_entries",
    "strverscmp",
]
