"""SIGINT (Ctrl-C) and SIGTERM (Slurm's preemption, ``kill``) during a run:
the first one asks the stages to finish at their best point so far
(``lapq.interrupt``), so the run is still evaluated, reported as
interrupted and saved, and exits non-zero; a second one aborts at once.
The search state file stays for ``--resume`` either way.
"""
import signal
from contextlib import contextmanager
from typing import Iterator

from ..lapq import interrupt
from .dist import any_rank, is_distributed

SIGNALS = {signal.SIGINT: 'SIGINT', signal.SIGTERM: 'SIGTERM'}


@contextmanager
def stop_on_signals(logger=None) -> Iterator[None]:
    """Install the handlers for the block (main thread only); restore the
    previous ones after it."""
    interrupt.reset(agree=any_rank if is_distributed() else None)

    def handler(signum, frame):
        if interrupt.stop_reason() is not None:
            raise KeyboardInterrupt
        interrupt.request_stop(SIGNALS[signum])
        if logger is not None:
            logger.warning(f'{SIGNALS[signum]}: finishing with the best '
                           'point so far (evaluation, report, checkpoint); '
                           'send it again to abort at once')

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def exit_status() -> int:
    """128 + the signal's number when a signal stopped the run (1 when it
    was sent to another process of the run), else 0."""
    reason = interrupt.stop_reason()
    if reason is None:
        return 0
    for signum, name in SIGNALS.items():
        if name == reason:
            return 128 + int(signum)
    return 1
