"""Work that runs beside the pipeline's main thread: the image's dracut while the live file is packed.

The dracut stage needs only ``rootfs.img``, not the live file, and the squashfs writer does not
keep two cores busy all the time: run side by side, the two finish sooner than one after the
other.  :class:`Job` is the whole mechanism, with the pipeline's guarantees kept:

* the job's result, or its exception, is handed over in the main thread by :meth:`Job.result`;
* :meth:`Job.cancel` (the build failed, or was interrupted) kills the programs the job started
  -- only those, through a :class:`liveimg.run.Scope` -- and waits for its thread, so that no
  program and no thread outlives the build, and its files are not written while the staging
  directory is removed;
* a cancelling signal already kills every program (:mod:`liveimg.cancel`): the job's thread
  then ends with its program's error, which :meth:`Job.cancel` discards;
* its progress is reported as its stages' beginnings, ends and messages only: the terminal's one
  bar stays the main thread's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from liveimg import run as runner
from liveimg.errors import InternalError
from liveimg.progress import Event, Progress

log = logging.getLogger(__name__)

T = TypeVar("T")


class Job(Generic[T]):
    """``work(progress)`` running in a thread of its own, started at once."""

    def __init__(self, name: str, work: Callable[[Progress], T], progress: Progress) -> None:
        self.name = name
        self._scope = runner.Scope()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._done = False
        quiet = Progress(_without_updates(progress), rate=progress.rate)
        self._thread = threading.Thread(target=self._main, args=(work, quiet), name=f"liveimg-{name}", daemon=True)
        self._thread.start()

    def _main(self, work: Callable[[Progress], T], progress: Progress) -> None:
        try:
            with runner.scoped(self._scope):
                self._value = work(progress)
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def result(self) -> T:
        """Wait for the job; its value, or its exception raised here."""
        self._thread.join()
        self._done = True
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._value is None:
            raise InternalError(f"the {self.name} job ended without a result")
        return self._value

    def cancel(self) -> None:
        """Kill the job's programs and wait for its thread; its result is discarded.  Never raises."""
        if self._done:
            return
        self._done = True
        self._scope.kill()
        self._thread.join()
        if self._error is not None:
            log.debug("the %s job, cancelled, ended with: %s", self.name, self._error)


def _without_updates(progress: Progress) -> Callable[[Event], None]:
    def sink(event: Event) -> None:
        if event.event != "progress":
            progress.emit(event)

    return sink
