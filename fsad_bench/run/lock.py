"""One writer per run directory: an exclusive lock held for the whole run.

Two runs started together on one ``--out`` would both pass the resume check and interleave
their records; two identical ones would play every episode twice. The lock (``flock`` on
``OUT/.lock``, released by the kernel if the holder dies) makes the second stop at once with
one line naming the holder's PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from fsad_bench.errors import FsadError

LOCK = ".lock"


@contextlib.contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    path = Path(out_dir) / LOCK
    with open(path, "a+", encoding="ascii") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise FsadError(
                f"{out_dir}: another fsad-bench run (PID {holder}) is writing here; wait for "
                "it to finish (then run again to resume) or pass another --out"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
