"""The check of the additive model that the allocation trusts: the
calibration loss of the whole allocation (Lp clips, nearest rounding)
against the sum of its single probes, the same for the budget's uniform
width, and the rank correlation of predicted and measured pairs of
probes drawn at random."""
import random
from typing import Dict, Tuple

from ..allocation import Allocation
from ..sensitivity import INPUT, WEIGHT, loss_of_widths
from .costs import CostModel, Widths
from .settings import MixedSettings


def check_additivity(objective, base, allocation: Allocation, sens,
                     costs: CostModel, settings: MixedSettings, seed: int,
                     reduce_hist, hist_bins: int) -> dict:
    """Predicted against measured: the whole allocation, and pairs of
    single probes drawn at random (``seed``)."""
    from scipy.stats import spearmanr
    base_bits = settings.base_bits
    measured = loss_of_widths(
        objective, base, tensor_widths(costs, allocation.choice, base_bits),
        settings.p, reduce_hist, hist_bins)
    singles = [(layer, tensor, bits)
               for layer, tensors in sens.increase.items()
               for tensor, by in tensors.items() for bits in by
               if bits != base_bits]
    rng = random.Random(seed)
    pairs = []
    for _ in range(settings.check_pairs if len(singles) > 1 else 0):
        first, second = rng.sample(singles, 2)
        if first[:2] == second[:2]:
            continue  # the same tensor at two widths is not a pair
        loss = loss_of_widths(objective, base,
                              {first[:2]: first[2], second[:2]: second[2]},
                              settings.p, reduce_hist, hist_bins)
        pairs.append(dict(probes=[list(first), list(second)],
                          predicted=sens.of(*first) + sens.of(*second),
                          measured=loss - sens.base_loss))
    uniform_loss = None
    if settings.kind == 'bops_of':  # the uniform point of the same budget
        uniform = {c.name: c.uniform_option(settings.uniform)
                   for c in costs.costs}
        uniform_loss = loss_of_widths(
            objective, base, tensor_widths(costs, uniform, base_bits),
            settings.p, reduce_hist, hist_bins)
    rho = float('nan')
    if len(pairs) >= 3:
        rho = float(spearmanr([p['predicted'] for p in pairs],
                              [p['measured'] for p in pairs]).statistic)
    return dict(base_loss=sens.base_loss,
                predicted_loss=sens.base_loss +
                allocation.predicted_loss_increase,
                measured_loss=measured, uniform_loss=uniform_loss,
                pairs=pairs, pair_spearman=rho)


def tensor_widths(costs: CostModel, choice: Dict[str, Widths],
                  base_bits: int) -> Dict[Tuple[str, str], int]:
    """The free tensors of ``choice`` (``{layer: (w, a)}``) that are not at
    the base width, as ``loss_of_widths`` takes them."""
    widths = {}
    for c in costs.costs:
        w, a = choice[c.name]
        if c.free_w and w != base_bits:
            widths[(c.name, WEIGHT)] = w
        if c.free_a and a != base_bits:
            widths[(c.name, INPUT)] = a
    return widths
