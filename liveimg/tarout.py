"""A directory of the appliance streamed into the squashfs writer: libguestfs's ``tar-out`` through a pipe.

The flat rootfs type packs the physical root this way, with no ext4 image and no copy on the
host: the appliance's GNU tar writes the archive, :func:`liveimg.squashfs.tar.add_tar_stream`
reads it member by member into the writer.  What the appliance's tar says on its way
(libguestfs's appliance events) names the files it could not read when it fails.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from liveimg.errors import HostError, InternalError, InvalidImage, LiveImgError
from liveimg.squashfs.fstree import display
from liveimg.squashfs.tar import DamagedStream, add_tar_stream
from liveimg.squashfs.writer import SquashfsWriter

#: ``guestfs.EVENT_APPLIANCE`` (the bindings are imported lazily): what the appliance prints.
_EVENT_APPLIANCE = 0x10


def _tar_out_failed(directory: str, exc: BaseException, said: bytes) -> LiveImgError:
    """The error for a failed ``tar-out`` of ``directory``; ``said`` is what the appliance printed meanwhile."""
    text = " ".join(str(exc).split())
    if isinstance(exc, LiveImgError):
        return exc
    if isinstance(exc, RuntimeError):  # libguestfs: the appliance's tar could not read the guest's files
        # libguestfs only says "file receive cancelled by daemon"; tar's own lines name the files.
        lines = said.decode("utf-8", "replace").splitlines()
        tar = [display(line.strip()) for line in lines if line.startswith("tar: ") and "Exiting with" not in line]
        if tar:
            text = f"{'; '.join(tar[:3])}{' ...' if len(tar) > 3 else ''} ({text})"
        return InvalidImage(f"reading {directory} of the image in the appliance failed: {text}")
    if isinstance(exc, OSError):
        return HostError(f"streaming {directory} of the image from the appliance failed: {exc.strerror or text}")
    return InternalError(f"streaming {directory} of the image from the appliance failed: {exc!r}")


def tar_into(g: Any, directory: str, writer: SquashfsWriter, *, prefix: str, skip: frozenset[str]) -> int:
    """Stream ``directory`` of the appliance (``tar-out``) into the squashfs writer, through a pipe.

    Every failure fails the build, naming it: ``tar-out``'s (the appliance's tar could not read
    a file: a file missing from the image, or zeros in its place, otherwise), a stream that is
    not a whole archive (cut short, a damaged header, a member's data missing), or ours.
    """
    failure: list[BaseException] = []
    said = bytearray()

    def appliance_said(_event: int, _handle: int, buf: str | bytes, _array: list[int]) -> None:
        if len(said) < 1 << 16:  # the Python bindings give str
            said.extend(buf.encode("utf-8", "surrogateescape") if isinstance(buf, str) else buf)

    def produce(write_fd: int) -> None:
        try:
            # libguestfs opens the file it is given: /dev/fd/N is the pipe (no FIFO to open in turn,
            # so a tar-out that fails before writing cannot leave the reader waiting).
            g.tar_out(directory, f"/dev/fd/{write_fd}", numericowner=True, xattrs=True, selinux=True, acls=True)
        except BaseException as exc:  # reported by the consumer
            failure.append(exc)
        finally:
            os.close(write_fd)  # the end of the stream for the consumer

    damaged: DamagedStream | None = None
    event = g.set_event_callback(appliance_said, _EVENT_APPLIANCE)
    try:
        read_fd, write_fd = os.pipe()
        with os.fdopen(read_fd, "rb") as stream:
            producer = threading.Thread(target=produce, args=(write_fd,), name="liveimg-tar-out", daemon=True)
            try:
                producer.start()
            except BaseException:
                os.close(write_fd)
                raise
            try:
                count = add_tar_stream(writer, stream, prefix=prefix, skip=skip)
            except DamagedStream as exc:
                damaged = exc
            finally:
                stream.close()  # a producer still writing gets EPIPE and ends
                producer.join()
    finally:
        g.delete_event_callback(event)
    if failure:  # the appliance's failure is the cause of a damaged stream, and fails an intact one
        raise _tar_out_failed(directory, failure[0], bytes(said)) from damaged
    if damaged is not None:
        raise InvalidImage(f"reading {directory} of the image in the appliance: {damaged}") from damaged
    return count


__all__ = ["tar_into"]
