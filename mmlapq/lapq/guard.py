"""The held-out guard: which of the search's checkpoints to keep.

The search records checkpoints (its start, the best point after each sweep,
its end). Each is evaluated on held-out images the search never optimised,
image by image. A difference of mean held-out loss smaller than its noise
is not a choice, so the comparison is paired (the same images at two
points) and needs a margin of ``z`` standard errors of the mean per-image
difference:

1. A checkpoint *beats the start* when its mean held-out loss is below the
   start's by more than ``z`` standard errors. If none does, the guard keeps
   the start: the search did not show it generalises.
2. Among the checkpoints that beat the start, the guard keeps the latest
   one (the search's end, unless it did not beat the start) that no other
   such checkpoint beats by the same margin: the search's own result unless
   an earlier checkpoint is better beyond the noise.

The record says which rule decided, with the means and standard errors.
"""
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..quant.precision import wide_dtype

ReduceFn = Optional[Callable]


def paired_difference(a: torch.Tensor, b: torch.Tensor,
                      reduce_fn: ReduceFn = None) -> Tuple[float, float]:
    """Mean and standard error of the mean of ``a - b`` (per-image losses of
    the same images at two points); ``reduce_fn(sum, count)`` sums over the
    processes that hold the other images."""
    d = (a - b).to(wide_dtype(a.device))
    total, count = d.sum(), d.numel()
    squares = d.square().sum()
    if reduce_fn is not None:
        total, _ = reduce_fn(total, count)
        squares, count = reduce_fn(squares, count)
    mean = float(total) / count
    if count < 2:
        return mean, math.inf
    variance = max(float(squares) / count - mean * mean, 0.0) * count / (
        count - 1)
    return mean, math.sqrt(variance / count)


def choose_checkpoint(losses: Sequence[torch.Tensor], z: float,
                      reduce_fn: ReduceFn = None,
                      labels: Optional[Sequence[str]] = None
                      ) -> Tuple[int, str, List[dict]]:
    """The index of the checkpoint to keep (0: the start), the rule that
    decided in words, and per checkpoint its paired difference from the
    start (``delta``, ``se``). ``losses[i]``: per-image held-out losses at
    checkpoint i, the same images in the same order for every i."""
    labels = list(labels or [str(i) for i in range(len(losses))])
    rows = [dict(delta=0.0, se=0.0)]
    for other in losses[1:]:
        delta, se = paired_difference(other, losses[0], reduce_fn)
        rows.append(dict(delta=delta, se=se))
    beats_start = [i for i in range(1, len(losses))
                   if rows[i]['delta'] < -z * rows[i]['se']]
    if not beats_start:
        last = rows[-1]
        return 0, (f'kept the {labels[0]} checkpoint: no checkpoint lowered '
                   f'the held-out loss by more than {z:g} standard errors '
                   f"(the {labels[-1]}: {last['delta']:+.5f} +- "
                   f"{last['se']:.5f})"), rows
    for i in reversed(beats_start):  # latest first
        better = [j for j in beats_start if j != i and _beats(
            losses[j], losses[i], z, reduce_fn)]
        if not better:
            text = (f"kept the {labels[i]} checkpoint: held-out loss "
                    f"{rows[i]['delta']:+.5f} +- {rows[i]['se']:.5f} "
                    f'against the {labels[0]}, beyond {z:g} standard '
                    'errors')
            if i != beats_start[-1]:
                text += (f', and better than the {labels[beats_start[-1]]}'
                         ' checkpoint beyond the noise')
            return i, text, rows
    raise AssertionError('unreachable: "beats" is a strict order')


def _beats(a: torch.Tensor, b: torch.Tensor, z: float,
           reduce_fn: ReduceFn) -> bool:
    delta, se = paired_difference(a, b, reduce_fn)
    return delta < -z * se
