"""Mixed precision, start to end on a copy of the float model: the costs,
the sensitivity at the base width, the allocation under the budget, the
check of the additive model, and the allocation as per-layer overrides
(the package's doc says what each step does)."""
import copy
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional

import torch.nn as nn

from ...quant.wrap import QuantSettings, quantize_model
from ..allocation import LayerOptions, all_options, allocate
from ..calib import CalibrationSet
from ..chain import build_chain
from ..initialize import ClipInitializer, InitSettings
from ..objective import CalibrationObjective
from ..sensitivity import INPUT, WEIGHT, measure_sensitivity
from .additivity import check_additivity
from .costs import cost_model
from .settings import MixedSettings


@dataclass
class MixedResult:
    """The allocation and its record (for the report)."""

    overrides: Dict[str, Dict[str, int]]
    record: dict = field(default_factory=dict)


def choose_widths(model: nn.Module, quant: QuantSettings,
                  settings: MixedSettings, calib: CalibrationSet,
                  init: InitSettings, cache_bytes: int = 0,
                  reduce_fn=None, reduce_hist=None, seed: int = 0,
                  log: Optional[Callable[[str], None]] = None
                  ) -> MixedResult:
    """Sensitivity, allocation and its check on a copy of the float
    ``model`` (left untouched); the overrides that give each free layer its
    widths."""
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    costs = cost_model(model, calib.inputs[0], quant, settings)
    base = copy.deepcopy(model)
    base_bits = settings.base_bits
    edges = 'same' if settings.free_first_last else quant.first_last
    quantize_model(base, replace(quant, w_bits=base_bits, a_bits=base_bits,
                                 first_last=edges),
                   example=calib.inputs[0])
    objective = CalibrationObjective(build_chain(base, calib.inputs[0]),
                                     calib, model=base, cache_bytes=0,
                                     reduce_fn=reduce_fn)
    ClipInitializer(objective, InitSettings(method='lp', p=settings.p,
                                            mode=init.mode,
                                            hist_bins=init.hist_bins),
                    auto_sign=quant.a_signed == 'auto',
                    reduce_hist=reduce_hist)()
    candidates = {}
    for c in costs.costs:
        tensors = {}
        if c.free_w:
            tensors[WEIGHT] = settings.w_candidates
        if c.free_a:
            tensors[INPUT] = settings.a_candidates
        if tensors:
            candidates[c.name] = tensors
    sens = measure_sensitivity(objective, base, candidates, base_bits,
                               settings.p, cache_bytes=cache_bytes,
                               reduce_hist=reduce_hist,
                               hist_bins=init.hist_bins)
    log(f'sensitivity: {sens.probes} probes of {len(candidates)} layers in '
        f'{sens.seconds:.1f} s ({sens.steps_run} of {sens.full_steps} '
        'chain steps a full forward per probe would run)')
    layers = []
    for c in costs.costs:
        options = costs.options(c)
        layers.append(LayerOptions(
            c.name, tuple(options),
            tuple(sens.of(c.name, WEIGHT, w) + sens.of(c.name, INPUT, a)
                  for w, a in options),
            tuple(costs.cost(c, o) for o in options)))
    budget = costs.budget()
    allocation = allocate(layers, budget)
    check = check_additivity(objective, base, allocation, sens, costs,
                             settings, seed, reduce_hist, init.hist_bins)
    uniform = '' if check['uniform_loss'] is None else \
        f" (the budget's uniform width: {check['uniform_loss']:.5f})"
    log(f'allocation: {costs.unit()} {allocation.cost:.6g} of budget '
        f'{budget:.6g}; predicted calibration loss '
        f"{check['predicted_loss']:.5f}, measured "
        f"{check['measured_loss']:.5f}{uniform} (Lp clips, nearest "
        f"rounding); pair rank correlation {check['pair_spearman']:.2f}")
    overrides = {c.name: {k: v for k, v in zip(
        ('w_bits', 'a_bits'), allocation.choice[c.name])
        if (k == 'w_bits' and c.free_w) or (k == 'a_bits' and c.free_a)}
        for c in costs.costs if c.free_w or c.free_a}
    runs_at = {c.name: costs.runs_at(allocation.choice[c.name])
               for c in costs.costs}
    # 'used' is the allocation's cost until the wrapped model is measured
    # (``running.check_running``), which replaces it.
    record = dict(
        settings=settings.to_dict(), kind=settings.kind, unit=costs.unit(),
        budget=budget, used=allocation.cost, allocated=allocation.cost,
        solver=allocation.solver,
        minimum=costs.minimum(),
        predicted_loss_increase=allocation.predicted_loss_increase,
        uniform={f'w{w}a{a}': costs.uniform_total((w, a))
                 for w, a in all_options(settings.w_candidates,
                                         settings.a_candidates)},
        layers=[dict(name=c.name, macs=c.macs, params=c.params,
                     free_w=c.free_w, free_a=c.free_a,
                     w_bits=runs_at[c.name][0], a_bits=runs_at[c.name][1],
                     option=list(allocation.choice[c.name]),
                     cost=costs.cost(c, allocation.choice[c.name]))
                for c in costs.costs],
        sensitivity=sens.to_dict(), check=check,
        seconds=time.perf_counter() - t0)
    return MixedResult(overrides, record)
