"""A request to stop early, kept for the stages that can end at a good
point: the p sweep (with the p values measured so far), GPTQ (the layers
not reached keep nearest rounding) and the joint search (its best point).

A signal handler (the engine installs one for SIGINT and SIGTERM) calls
:func:`request_stop`; the stages poll :func:`stop_requested` at points every
process reaches in the same order, so in a distributed run ``agree`` (an
all-reduce of the flag) makes every process stop at the same evaluation.
"""
from typing import Callable, Optional

_reason: Optional[str] = None
_agree: Optional[Callable[[bool], bool]] = None


def request_stop(reason: str) -> None:
    """Ask the running stages to finish at their best point so far."""
    global _reason
    if _reason is None:
        _reason = reason


def stop_requested() -> bool:
    """Whether this process, or (distributed) any process, was asked to
    stop. Call it at the same points on every process."""
    global _reason
    local = _reason is not None
    agreed = _agree(local) if _agree is not None else local
    if agreed and not local:
        _reason = 'a signal to another process'
    return agreed


def stop_reason() -> Optional[str]:
    """What asked for the stop ('SIGINT', 'SIGTERM', ...), or None."""
    return _reason


def reset(agree: Optional[Callable[[bool], bool]] = None) -> None:
    """Clear the request; ``agree(flag)`` combines the flags of all
    processes (None: one process)."""
    global _reason, _agree
    _reason, _agree = None, agree
