"""Progress bars of long steps: tqdm on stderr (what it is doing, n of N, the rate and the time left).
Where the stream is not a terminal (a log file, a pipe), each update is one plain line, at most one
every :data:`FILE_INTERVAL` seconds, instead of one line rewritten with carriage returns that piles up
in the file.

Imports tqdm and the standard library only.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

#: seconds between two progress lines written to a file (a terminal's bar is redrawn as tqdm does)
FILE_INTERVAL = 30.0


class LineTqdm(tqdm):
    """tqdm writing each update as a line of its own (no ``\\r``), for files."""

    @staticmethod
    def status_printer(file):
        last = [None]

        def print_status(s):
            if not s or s == last[0]:  # tqdm clears the line before a tqdm.write; close repeats the last
                return
            file.write(("" if last[0] is None else "\n") + s)
            last[0] = s
            getattr(file, "flush", lambda: None)()

        return print_status


def is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def note(message: str) -> None:
    """One line on stderr that leaves a running bar intact."""
    tqdm.write(message, file=sys.stderr)


def bar(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr (or ``file=``): a bar on a terminal, else
    :class:`LineTqdm` updating at most every :data:`FILE_INTERVAL` seconds."""
    stream = kwargs.pop("file", None) or sys.stderr
    if is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.setdefault("mininterval", FILE_INTERVAL)
    kwargs.setdefault("ascii", True)
    return LineTqdm(iterable, file=stream, **kwargs)
