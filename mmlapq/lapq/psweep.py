"""Choice of the Lp exponent p by the network loss (LAPQ.md section 4).

For each p on a grid the layer-wise Lp clips are built and the calibration
loss of the whole quantized network is measured; a parabola loss(p) is fitted
and its vertex p* taken. Unlike the reference, the vertex is clamped to the
grid, and when the parabola opens downwards (no minimum) the grid's best p is
used instead.
"""
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple

import numpy as np

from .interrupt import stop_requested


@dataclass
class PFit:
    p_star: float
    coeffs: Tuple[float, float, float]  # a, b, c of a*p^2 + b*p + c
    fallback: str = ''  # why the vertex was not used as is ('' if it was)


@dataclass
class PSweep:
    ps: List[float]
    losses: List[float]
    fit: PFit
    losses_at_star: float = float('nan')
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(ps=self.ps, losses=self.losses, p_star=self.fit.p_star,
                    parabola=list(self.fit.coeffs), fallback=self.fit.fallback,
                    loss_at_p_star=self.losses_at_star)


def fit_p(ps: Sequence[float], losses: Sequence[float]) -> PFit:
    """Vertex of the least-squares parabola through (p, loss), clamped to
    [min p, max p]; the grid's best p when the parabola has no minimum."""
    ps_arr, losses_arr = np.asarray(ps, float), np.asarray(losses, float)
    a, b, c = (float(v) for v in np.polyfit(ps_arr, losses_arr, 2))
    best_on_grid = float(ps_arr[int(np.argmin(losses_arr))])
    if not a > 0:
        return PFit(best_on_grid, (a, b, c),
                    'parabola opens downwards: best p on the grid')
    vertex = -b / (2 * a)
    lo, hi = float(ps_arr.min()), float(ps_arr.max())
    if vertex < lo or vertex > hi:
        return PFit(min(max(vertex, lo), hi), (a, b, c),
                    f'vertex {vertex:.3f} outside the grid: clamped')
    return PFit(vertex, (a, b, c))


def sweep_p(init_at: Callable[[float], object], loss: Callable[[], float],
            p_grid: Sequence[float], log=None) -> PSweep:
    """Loss at each p of ``p_grid`` (``init_at(p)`` sets the clips), then
    the fit. The model is left at the clips of p*. On a stop request the
    sweep ends with the p values measured so far (fewer than three: the
    best of them)."""
    losses = []
    for p in p_grid:
        if losses and stop_requested():
            p_grid = p_grid[:len(losses)]
            break
        init_at(p)
        losses.append(loss())
        if log:
            log(f'p sweep: p={p:.3f} calibration loss={losses[-1]:.5f}',
                force=True)
    if len(losses) < 3:
        best = float(p_grid[int(np.argmin(losses))])
        fit = PFit(best, (0.0, 0.0, 0.0),
                   'stopped early: best p measured')
    else:
        fit = fit_p(p_grid, losses)
    init_at(fit.p_star)
    sweep = PSweep(list(map(float, p_grid)), losses, fit)
    sweep.losses_at_star = loss()
    return sweep
