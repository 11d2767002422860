"""Per-layer widths under a budget (mixed precision, issue 29): the exact
choice, by an integer linear program, of one option per layer that
minimises the summed predicted loss increase with the summed cost at most
the budget (HAWQ-V3's formulation; the predicted increases are LAPQ's
measured sensitivities, the costs BOPs, bytes or a latency table).

One binary per (layer, option), one equality per layer (exactly one
option), one inequality for the budget; scipy's HiGHS solves it exactly
(a few hundred binaries for the models here). Pure numpy + scipy.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

Option = Tuple[int, int]  # (weight bits, activation bits)


@dataclass(frozen=True)
class LayerOptions:
    """The widths one layer may take: for each option its predicted
    increase of the calibration loss and its cost (same units as the
    budget). A layer kept at its configured width has one option."""

    name: str
    options: Tuple[Option, ...]
    loss: Tuple[float, ...]
    cost: Tuple[float, ...]

    def __post_init__(self):
        if not self.options:
            raise ValueError(f'{self.name}: no candidate width')
        if not len(self.options) == len(self.loss) == len(self.cost):
            raise ValueError(f'{self.name}: {len(self.options)} options, '
                             f'{len(self.loss)} losses, {len(self.cost)} '
                             'costs')
        if not all(np.isfinite(self.loss)) or not all(np.isfinite(self.cost)):
            raise ValueError(f'{self.name}: a loss or cost is not finite')


@dataclass
class Allocation:
    """The chosen option of every layer, and what it predicts and costs."""

    choice: Dict[str, Option]
    predicted_loss_increase: float
    cost: float
    budget: float
    # 'milp', or 'cheapest': every layer at its cheapest option, where the
    # budget is within the solver's tolerance of the smallest cost
    solver: str = 'milp'


# Costs in float (latency in ms, a mean width times a parameter count) sum
# to slightly different values in different orders: a cost within this
# relative tolerance of the budget meets it.
BUDGET_RTOL = 1e-9
_INFEASIBLE = 2  # scipy.optimize.milp's status of an infeasible problem


def within_budget(cost: float, budget: float) -> bool:
    """Whether ``cost`` meets ``budget``, up to float summation error."""
    return cost <= budget + BUDGET_RTOL * abs(budget)


def minimum_cost(layers: Sequence[LayerOptions]) -> float:
    """The smallest cost any allocation has (each layer's cheapest
    option)."""
    return float(sum(min(layer.cost) for layer in layers))


def allocate(layers: Sequence[LayerOptions], budget: float) -> Allocation:
    """The allocation of least summed predicted loss increase whose cost is
    at most ``budget`` (:func:`within_budget`); ValueError (one line) when
    no allocation fits."""
    from scipy.optimize import LinearConstraint, milp
    layers = list(layers)
    if not layers:
        raise ValueError('no layer to allocate widths to')
    lowest = minimum_cost(layers)
    if not within_budget(lowest, budget):
        raise ValueError(f'the budget {budget:.6g} is below {lowest:.6g}, '
                         'what the smallest candidate widths cost: raise '
                         'the budget or add smaller candidates')
    loss = np.concatenate([np.asarray(l.loss, float) for l in layers])
    cost = np.concatenate([np.asarray(l.cost, float) for l in layers])
    one_each = np.zeros((len(layers), len(loss)))
    start = 0
    for row, layer in enumerate(layers):
        one_each[row, start:start + len(layer.options)] = 1.0
        start += len(layer.options)
    # Costs are scaled to the budget so that HiGHS's feasibility tolerance
    # (absolute, 1e-6) is a relative one. An answer above the budget by
    # that tolerance is solved again under a slightly tighter bound; if
    # none is found there, the cheapest allocation (which fits) is taken.
    scale = budget if budget > 0 else 1.0
    chosen, solver = None, 'milp'
    for slack in (0.0, 1e-6, 1e-5):
        result = milp(loss, integrality=np.ones_like(loss), bounds=(0, 1),
                      constraints=[LinearConstraint(one_each, 1, 1),
                                   LinearConstraint(cost[None] / scale,
                                                    -np.inf, 1.0 - slack)])
        if result.status == _INFEASIBLE:  # the tighter bound cut it off
            break
        if not result.success:
            raise ValueError(f'the integer program under the budget '
                             f'{budget:.6g} failed: {result.message}')
        picked = np.round(result.x).astype(bool)
        if within_budget(float(cost[picked].sum()), budget):
            chosen = picked
            break
    if chosen is None:  # a budget within the solver's tolerance of the
        chosen, solver = _cheapest(layers), 'cheapest'  # smallest cost
    choice, start = {}, 0
    for layer in layers:
        picked = np.flatnonzero(chosen[start:start + len(layer.options)])
        choice[layer.name] = layer.options[int(picked[0])]
        start += len(layer.options)
    used = float(cost[chosen].sum())
    return Allocation(choice=choice,
                      predicted_loss_increase=float(loss[chosen].sum()),
                      cost=used, budget=float(budget), solver=solver)


def _cheapest(layers: Sequence[LayerOptions]) -> np.ndarray:
    """The selection of each layer's cheapest option (the least predicted
    loss among equally cheap ones)."""
    picked = []
    for layer in layers:
        cheapest = min(layer.cost)
        best = min((loss, i) for i, (loss, c) in enumerate(
            zip(layer.loss, layer.cost)) if c == cheapest)[1]
        picked += [i == best for i in range(len(layer.options))]
    return np.asarray(picked)


def bops(macs: int, option: Option) -> float:
    """Bit operations of a layer of ``macs`` multiply-accumulates at
    ``option``: MACs x weight bits x activation bits."""
    w_bits, a_bits = option
    return float(macs) * w_bits * a_bits


def bops_options(name: str, macs: int, options: Sequence[Option],
                 loss: Sequence[float]) -> LayerOptions:
    """A layer's options with BOPs as their cost."""
    return LayerOptions(name, tuple(options), tuple(float(v) for v in loss),
                        tuple(bops(macs, o) for o in options))


def all_options(w_candidates: Sequence[int], a_candidates: Sequence[int]
                ) -> List[Option]:
    """Every (weight bits, activation bits) pair of the candidates."""
    for bits in list(w_candidates) + list(a_candidates):
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f'candidate width {bits!r} is outside 2..16')
    return [(w, a) for w in w_candidates for a in a_candidates]
