"""Joint loss-aware search over all clips (LAPQ.md section 5).

Variables: one per quantizer, u = log(alpha / alpha0), so every variable has
the same scale whatever its layer (scipy's line search then takes sensible
steps) and alpha stays > 0; bounds keep alpha in
[exp(lo), exp(hi)] * alpha0. Per-channel clips move together (one multiplier
per tensor). The best point seen is kept whatever scipy returns; a budget of
evaluations and a stop request (Ctrl-C, SIGTERM: ``lapq.interrupt``) both
end the search at that best point.

Resuming (``lapq.resume``): given the evaluations of an interrupted search,
the search replays them (scipy visits the same points; their losses are
read, not computed) and goes on from where it stopped.

The guard against fitting the calibration images: with a held-out objective
(images the search never optimises), the search records checkpoints (its
start, the best point at the end of each sweep, and its end) and returns the
one that ``guard.choose_checkpoint`` picks: a checkpoint must lower the
held-out loss by more than ``guard_z`` standard errors of a paired per-image
comparison to replace the start.
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from scipy import optimize

from ..quant.grids import check_choice, check_type
from .guard import choose_checkpoint
from .interrupt import stop_reason, stop_requested
from .objective import CalibrationObjective

SEARCH_METHODS = ('powell', 'coordinate', 'none')
SEARCH_VARIABLES = ('auto', 'all', 'activations')


@dataclass
class SearchSettings:
    method: str = 'powell'
    maxiter: int = 2            # Powell / coordinate-descent sweeps
    max_evals: Optional[int] = None
    log_bounds: tuple = (-2.3, 0.7)  # alpha in [0.1, 2.0] x alpha0
    xtol: float = 1e-2          # in log units: 1% of alpha
    ftol: float = 1e-4          # as the reference
    log_interval: float = 5.0   # seconds between progress lines
    # 'all' clips, or 'activations' only (weights keep their clips); 'auto':
    # activations only when GPTQ rounded the weights before the search (at
    # their clips), all otherwise.
    variables: str = 'auto'
    # The held-out guard's margin, in standard errors of the paired mean
    # per-image difference of held-out loss (see lapq/guard.py).
    guard_z: float = 2.0

    def __post_init__(self):
        check_type('search.maxiter', self.maxiter, int)
        if self.max_evals is not None:
            check_type('search.max_evals', self.max_evals, int)
        for key in ('xtol', 'ftol', 'log_interval', 'guard_z'):
            check_type(f'search.{key}', getattr(self, key), float)
        if self.method not in SEARCH_METHODS:
            raise ValueError(f'search method {self.method!r} is unknown: use '
                             f'one of {", ".join(SEARCH_METHODS)}')
        check_choice('search.variables', self.variables, SEARCH_VARIABLES)
        if self.maxiter < 1:
            raise ValueError(f'maxiter={self.maxiter} must be >= 1')
        if self.guard_z < 0:
            raise ValueError(f'search.guard_z={self.guard_z} must be >= 0')
        if self.max_evals is not None and self.max_evals < 1:
            raise ValueError(f'max_evals={self.max_evals} must be >= 1')
        lo, hi = self.log_bounds
        if not lo < 0 < hi:
            raise ValueError(f'log_bounds={self.log_bounds} must contain 0')


@dataclass
class SearchResult:
    method: str
    init_loss: float
    best_loss: float
    func_evals: int
    seconds: float
    stopped: str                       # why the search ended
    best_u: List[float] = field(default_factory=list)
    history: List[float] = field(default_factory=list)  # loss per evaluation
    # The held-out guard (None without a held-out set): its loss at the
    # start and at the returned point, what it did, and every checkpoint.
    holdout_init_loss: Optional[float] = None
    holdout_loss: Optional[float] = None
    guard: Optional[str] = None
    checkpoints: List[dict] = field(default_factory=list)

    @property
    def ms_per_eval(self) -> float:
        return 1000.0 * self.seconds / max(self.func_evals, 1)


class _Stop(Exception):
    pass


class ClipSpace:
    """Maps the normalised vector u to clips: alpha = alpha0 * exp(u)."""

    def __init__(self, objective: CalibrationObjective,
                 alpha0: Dict[str, torch.Tensor], variables: str = 'all'):
        self.objective = objective
        self.names = [n for n in objective.quantizers
                      if variables != 'activations'
                      or not n.endswith('.weight')]
        self.alpha0 = [alpha0[n] for n in self.names]

    def apply(self, u: np.ndarray) -> None:
        for name, a0, ui in zip(self.names, self.alpha0, u):
            self.objective.quantizers[name].set_alpha(a0 * float(np.exp(ui)))

    def clips(self, u: np.ndarray) -> Dict[str, torch.Tensor]:
        return {n: a0 * float(np.exp(ui))
                for n, a0, ui in zip(self.names, self.alpha0, u)}


def joint_search(objective: CalibrationObjective, settings: SearchSettings,
                 log=None, holdout: Optional[CalibrationObjective] = None,
                 variables: Optional[str] = None,
                 replay: Sequence[Sequence[float]] = (),
                 on_progress: Optional[Callable[[list], None]] = None
                 ) -> SearchResult:
    """Search from the model's current clips; leaves the model at the best
    point found (with ``holdout``: the checkpoint the guard keeps, see the
    module doc) and returns the record of the search.

    ``replay``: evaluations ``[*u, loss]`` of an earlier run of this search
    to read instead of computing; ``on_progress(evaluations)`` is called
    after every sweep and at the end with all evaluations so far."""
    variables = variables or settings.variables
    space = ClipSpace(objective, objective.clips(),
                      'all' if variables == 'auto' else variables)
    n = len(space.names)
    u0 = np.zeros(n)
    state = dict(best=None, best_u=u0.copy(), history=[], evals=[],
                 replay=[list(e) for e in replay])
    t0 = time.perf_counter()

    def replayed(u: np.ndarray) -> Optional[float]:
        """The saved loss of this evaluation, if it is the saved point."""
        i = len(state['history'])
        if i >= len(state['replay']):
            return None
        saved = state['replay'][i]
        if np.array_equal(np.asarray(saved[:-1]), u):
            return float(saved[-1])
        if log:
            log(f'resume: evaluation {i + 1} is not the saved point (another '
                'machine or thread count?): computing from here', force=True)
        state['replay'] = []
        return None

    def f(u: np.ndarray) -> float:
        if settings.max_evals is not None and \
                len(state['history']) >= settings.max_evals:
            raise _Stop('max_evals reached')
        value = replayed(u)
        if value is None:
            if state['history'] and stop_requested():  # start: always
                raise _Stop(f'interrupted ({stop_reason() or "stop"}): kept '
                            'the best point so far')
            space.apply(u)
            value = objective.loss()
        state['history'].append(value)
        state['evals'].append([float(v) for v in u] + [value])
        if state['best'] is None or value < state['best']:
            state['best'], state['best_u'] = value, np.array(u, float)
        if log:
            log(f'{settings.method}: eval {len(state["history"])}, '
                f'loss {value:.5f}, best {state["best"]:.5f}, '
                f'{time.perf_counter() - t0:.1f} s')
        return value

    init_loss = f(u0)
    checkpoints = [('start', u0.copy(), init_loss)]

    def end_of_sweep(*_) -> None:  # scipy's per-iteration callback
        checkpoints.append((f'sweep {len(checkpoints)}',
                            state['best_u'].copy(), state['best']))
        if on_progress is not None:
            on_progress(state['evals'])

    stopped = 'converged'
    if settings.method != 'none':
        lo, hi = settings.log_bounds
        try:
            if settings.method == 'powell':
                optimize.minimize(
                    f, u0, method='Powell', bounds=[(lo, hi)] * n,
                    callback=end_of_sweep,
                    options=dict(maxiter=settings.maxiter,
                                 xtol=settings.xtol, ftol=settings.ftol))
            else:
                _coordinate_descent(f, state, n, lo, hi, settings,
                                    end_of_sweep)
            if settings.max_evals is None or \
                    len(state['history']) < settings.max_evals:
                stopped = f'maxiter {settings.maxiter} or converged'
        except _Stop as stop:
            stopped = str(stop)
        except KeyboardInterrupt:
            stopped = 'interrupted (Ctrl-C): kept the best point so far'
    if on_progress is not None:
        on_progress(state['evals'])
    checkpoints.append(('end', state['best_u'].copy(), state['best']))
    chosen_u, guard_record = state['best_u'], {}
    if holdout is not None:
        chosen_u, guard_record = _guard(space, holdout, checkpoints,
                                        settings.guard_z, log)
    space.apply(chosen_u)
    best_loss = objective.loss()
    if log:
        log(f'{settings.method}: done after {len(state["history"])} evals '
            f'({stopped}), loss {init_loss:.5f} -> {best_loss:.5f}',
            force=True)
    return SearchResult(settings.method, init_loss, best_loss,
                        len(state['history']), time.perf_counter() - t0,
                        stopped, [float(v) for v in chosen_u],
                        state['history'], **guard_record)


def _guard(space: ClipSpace, holdout: CalibrationObjective, checkpoints,
           z: float, log) -> tuple:
    """The checkpoint the held-out guard keeps and the record of it."""
    seen, losses = {}, []
    for _, u, _ in checkpoints:
        key = tuple(np.round(u, 12))
        if key not in seen:
            space.apply(u)
            seen[key] = holdout.image_losses()
        losses.append(seen[key])
    labels = [label for label, _, _ in checkpoints]
    best, rule, stats = choose_checkpoint(losses, z, holdout.reduce_fn,
                                          labels)
    rows = []
    for (label, _, calib_loss), image_losses, stat in zip(
            checkpoints, losses, stats):
        total, count = image_losses.sum(), image_losses.numel()
        if holdout.reduce_fn is not None:
            total, count = holdout.reduce_fn(total, count)
        rows.append(dict(point=label, calib_loss=float(calib_loss),
                         holdout_loss=float(total) / count,
                         holdout_delta=stat['delta'],
                         holdout_se=stat['se'], kept=False))
    rows[best]['kept'] = True
    if log:
        log(f'held-out guard: {rule}', force=True)
    return checkpoints[best][1], dict(
        holdout_init_loss=rows[0]['holdout_loss'],
        holdout_loss=rows[best]['holdout_loss'], guard=rule,
        checkpoints=rows)


def _coordinate_descent(f, state, n, lo, hi, settings,
                        end_of_sweep=None) -> None:
    """Baseline: bounded 1-D minimisation of one variable at a time."""
    for _ in range(settings.maxiter):
        start_best = state['best']
        for i in range(n):
            u = state['best_u'].copy()

            def along(v, i=i, u=u):
                u[i] = v
                return f(u)

            optimize.minimize_scalar(along, bounds=(lo, hi), method='bounded',
                                     options=dict(xatol=settings.xtol))
        if end_of_sweep is not None:
            end_of_sweep()
        if start_best - state['best'] <= settings.ftol * abs(start_best):
            return
