"""The compact tree: directories in name arenas, the tail index, the walk's order."""

from __future__ import annotations

import random

import pytest

from liveimg.errors import InvalidOptions
from liveimg.squashfs.constants import InodeType
from liveimg.squashfs.frag_table import TailIndex, tail_key
from liveimg.squashfs.fstree import NO_PARENT, Directory, FsTree


def test_directory_in_order_and_out_of_order() -> None:
    names = [f"n{i:04d}".encode() for i in range(300)]
    ordered = Directory()
    for i, name in enumerate(names):
        ordered.put(name, i)
    assert ordered.index is None  # names in order stay in the arena
    assert ordered.get(b"n0150") == 150 and ordered.get(b"n01500") is None and ordered.get(b"a") is None
    ordered.put(b"n0007", 999)  # re-pointing a name keeps the arena
    assert ordered.index is None and ordered.get(b"n0007") == 999
    shuffled = Directory()
    mixed = names[:]
    random.Random(1).shuffle(mixed)
    for name in mixed:
        shuffled.put(name, int(name[1:]))
    assert shuffled.index is not None
    assert shuffled.items() == [(name, i) for i, name in enumerate(names)]
    assert [n for n, _ in ordered.items()] == names
    assert Directory().items() == []


def test_tail_index_grows_and_finds_every_tail() -> None:
    index = TailIndex()
    tails = [bytes([i % 251]) * (i % 700 + 1) + i.to_bytes(4, "little") for i in range(5000)]
    for i, tail in enumerate(tails):
        assert index.get(tail_key(tail)) is None
        index.put(tail_key(tail), i // 30, i % 30 * 100)
    assert len(index) == 5000
    assert all(index.get(tail_key(t)) == (i // 30, i % 30 * 100) for i, t in enumerate(tails))
    assert index.get(tail_key(b"never stored")) is None


def test_walk_order_links_and_implicit_parents() -> None:
    tree = FsTree(0)
    f = tree.new(InodeType.REG, 0o644, 0, 0, 0)
    tree.add("b/z", f)  # "b" is made up
    tree.link("a", f)
    implicit = tree.lookup([b"b"])
    b = tree.new(InodeType.DIR, 0o700, 5, 5, 9)
    tree.add("b", b)  # the real "b" takes the made-up one's place and its entries
    assert tree.lookup([b"b"]) == b != implicit and tree.lookup([b"b", b"z"]) == f
    tree.add("b/c", tree.new(InodeType.FIFO, 0o600, 0, 0, 0))
    with pytest.raises(InvalidOptions, match="added twice"):
        tree.add("b/c", tree.new(InodeType.FIFO, 0o600, 0, 0, 0))
    with pytest.raises(InvalidOptions, match="not a directory"):
        tree.add("a/x", tree.new(InodeType.FIFO, 0o600, 0, 0, 0))
    order = [
        (node, parent, None if entries is None else [n for n, _ in entries]) for node, parent, entries in tree.walk()
    ]
    # The hard-linked file at its first name ("a"), each directory after its contents, the root last.
    assert order == [(f, tree.root, None), (tree.lookup([b"b", b"c"]), b, None), (b, tree.root, [b"c", b"z"]),
                     (tree.root, NO_PARENT, [b"a", b"b"])]  # fmt: skip
    assert tree.nlink[f] == 2
