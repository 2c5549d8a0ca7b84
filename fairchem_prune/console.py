"""What the console shows: progress on stderr, and dependencies' chatter sent to a log file.

Progress (:func:`progress`) is a tqdm bar on stderr, shown once a task has run for :data:`DELAY`
seconds and redrawn in place on a terminal. On a file or a pipe (a log, a Slurm output, ``| tee``)
it is one plain line per update, at most one every :data:`LINE_INTERVAL` seconds, never a pile of
carriage-return redraws. Python ``logging`` (where fairchem writes its config dump and warnings) goes
to a file while :func:`chatter_to` runs; what C libraries write to the process's stderr goes to
logging while :func:`native_stderr_to_log` runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

#: s between progress lines when stderr is not a terminal
LINE_INTERVAL = 15.0
#: s before a bar shows: a task done sooner prints nothing
DELAY = 2.0


class _Lines:
    """A text stream for tqdm that writes each of its redraws (``"\\r" + status + padding``, cursor
    moves for stacked bars) as one line, and a line equal to the one before not again."""

    def __init__(self, stream) -> None:
        self.stream, self.last = stream, None

    def write(self, text: str) -> None:
        for part in text.replace("\x1b[A", "").replace("\n", "\r").split("\r"):
            line = part.rstrip()
            if line and line != self.last:
                self.stream.write(line + "\n")
                self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable | None = None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on stderr (see the module docstring); ``disable=True`` shows nothing."""
    from tqdm import tqdm

    stream = sys.stderr
    kwargs = {"delay": DELAY, **kwargs}
    if stream.isatty():
        return tqdm(iterable, file=stream, **kwargs)
    return tqdm(iterable, file=_Lines(stream), **{"mininterval": LINE_INTERVAL, **kwargs})


@contextlib.contextmanager
def chatter_to(log: str | Path | None) -> Iterator[None]:
    """Python logging (where fairchem's config dump and warnings go) into the file ``log`` (INFO and
    up) instead of the console while the block runs (``None``: nowhere). The root logger's
    level is restored afterwards (fairchem's ``setup_logging`` sets it to INFO)."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = logging.FileHandler(log, mode="a") if log is not None else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO if log is not None else logging.ERROR)
    try:
        yield
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        handler.close()


@contextlib.contextmanager
def native_stderr_to_log(name: str) -> Iterator[None]:
    """What is written to file descriptor 2 while the block runs (C libraries' lines, which Python's
    ``sys.stderr`` never sees) goes to the logger ``name`` at DEBUG instead of the console."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().strip()
            if text:
                logging.getLogger(name).debug(text)
