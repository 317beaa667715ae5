"""Authenticode signatures of PE files (EFI binaries, signed kernels), for the Secure Boot tests.

A PE file's signatures are in its certificate table: data directory 4 of the optional header
gives its file offset and size, and the table is at the end of the file.  ``unsigned_copy``
writes a copy of a PE file without it, as if it had never been signed; a firmware or shim
with Secure Boot on must then refuse to run it.
"""

from __future__ import annotations

import struct
from pathlib import Path

#: Data directory 4: the certificate table (its "RVA" is a file offset).
CERTIFICATE_TABLE = 4
_PE32, _PE32_PLUS = 0x10B, 0x20B


def _certificate_entry(data: bytes) -> int:
    """The file offset of the certificate table's data directory entry (offset, size)."""
    if data[:2] != b"MZ":
        raise ValueError("not a PE file: no MZ header")
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe : pe + 4] != b"PE\0\0":
        raise ValueError("not a PE file: no PE signature")
    optional = pe + 4 + 20  # the COFF file header is 20 bytes
    (magic,) = struct.unpack_from("<H", data, optional)
    if magic not in (_PE32, _PE32_PLUS):
        raise ValueError(f"unknown PE optional header magic {magic:#x}")
    directories = optional + (96 if magic == _PE32 else 112)
    (count,) = struct.unpack_from("<I", data, directories - 4)
    if count <= CERTIFICATE_TABLE:
        raise ValueError("the PE file has no certificate table entry")
    return directories + CERTIFICATE_TABLE * 8


def certificate_table(data: bytes) -> tuple[int, int]:
    """``(file offset, size)`` of the PE file's certificate table; ``(0, 0)`` if unsigned."""
    offset, size = struct.unpack_from("<II", data, _certificate_entry(data))
    return offset, size


def unsigned_copy(src: Path, dest: Path) -> None:
    """Write ``src``, a signed PE file, to ``dest`` without its signatures.

    The certificate table's directory entry is zeroed and the table cut off the end of the
    file.  Raises ``ValueError`` if ``src`` is not a signed PE file.
    """
    data = bytearray(src.read_bytes())
    entry = _certificate_entry(data)
    offset, size = struct.unpack_from("<II", data, entry)
    if size == 0:
        raise ValueError(f"{src} is not signed")
    if offset + size != len(data):
        raise ValueError(f"{src}: the certificate table is not at the end of the file")
    struct.pack_into("<II", data, entry, 0, 0)
    dest.write_bytes(bytes(data[:offset]))
