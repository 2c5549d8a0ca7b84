"""A :class:`~fairchem_prune.errors.PruneError` raised where fairchem 1.x trains outside the ``fairchem``
command's own process, as one ``error: ...`` line there too (installed by :mod:`fairchem_prune._autoregister`):

* **local ranks** (``--num-gpus N``): fairchem starts the ranks with torch elastic, whose agent logs a
  failed rank's traceback and raises ``ChildFailedError``. :func:`quiet_rank_tracebacks` drops that
  log record when the rank failed with a PruneError, and :func:`user_message` reads the PruneError's
  message back out of the ``ChildFailedError`` (each rank's is recorded in torch's error file), so
  that the command prints it once.
* **Slurm jobs** (``--submit``): submitit runs fairchem's ``Runner`` in each task, and a task's
  exception ends up as a traceback in its log. :func:`one_line_in_jobs` makes a PruneError there one
  ``error: ...`` line on the task's stderr and exit status 2 (Slurm's job state: FAILED).

Every other exception passes unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys

from fairchem_prune.errors import PruneError

#: torch elastic's logger of a failed rank (``logger.exception`` with the rank's traceback)
RANK_LOGGER = "torch.distributed.elastic.multiprocessing.api"
#: the last line of a PruneError's traceback
_TRACEBACK_LINE = f"{PruneError.__module__}.{PruneError.__qualname__}: "
#: a PruneError as torch elastic's error file records it (``{type name}: {message}``)
_RECORDED = f"{PruneError.__name__}: "


def user_message(err: BaseException) -> str | None:
    """The one-line message of ``err``: a PruneError's, or that of the PruneError every failed rank of
    a torch elastic ``ChildFailedError`` raised; None for any other exception."""
    if isinstance(err, PruneError):
        return str(err)
    if type(err).__name__ != "ChildFailedError" or not getattr(err, "failures", None):
        return None
    messages = []
    for failure in err.failures.values():
        recorded = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
        if not recorded.startswith(_RECORDED):
            return None
        messages.append(recorded.removeprefix(_RECORDED))
    return "; ".join(dict.fromkeys(messages))


class _DropPruneErrorTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        lines = str(failure).strip().splitlines() if failure is not None else []
        return not (lines and lines[-1].startswith(_TRACEBACK_LINE))


@contextlib.contextmanager
def quiet_rank_tracebacks():
    """While in the context, torch elastic does not log the traceback of a rank that raised a PruneError."""
    logger, drop = logging.getLogger(RANK_LOGGER), _DropPruneErrorTracebacks()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def one_line_in_jobs(call):
    """``Runner.__call__`` of fairchem's CLI, which in a submitit job (``SUBMITIT_FOLDER`` set, by
    submitit) prints a PruneError as ``error: ...`` on stderr and exits with status 2. Elsewhere (the
    command's own process, local ranks) it is ``call`` itself: the command reports the error."""

    @functools.wraps(call)
    def wrapped(self, *args, **kwargs):
        try:
            return call(self, *args, **kwargs)
        except PruneError as err:
            if "SUBMITIT_FOLDER" not in os.environ:
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapped
