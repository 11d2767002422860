"""Mixed precision under a budget (issue 29): each layer's weight and input
widths chosen by LAPQ's own loss, then LAPQ as usual on that allocation.

    quantizer.mixed = dict(budget=dict(bops_of='w4a4'),
                           w_candidates=(2, 3, 4, 8), a_candidates=(4, 8))

1. Costs: every Conv2d / Linear layer's MACs (one probe forward) and
   parameter count; a budget is one of ``bops`` (MACs x weight bits x input
   bits, summed; float tensors count 32 bits), ``bops_of='w4a4'`` (the BOPs
   of that uniform width, first/last layers as configured), ``weight_bytes``
   (the packed weight codes of the quantized checkpoint: two per byte at 4
   bits and below, one at 5-8), ``weight_bits_avg`` (mean bits per
   quantized weight) or ``latency`` (milliseconds, from a per-layer table
   of ``tools/latency_table.py`` given as ``table``).
2. Free layers: those whose planned widths follow the uniform width (the
   first/last policy and the user's overrides keep the others fixed, unless
   ``free_first_last``).
3. Sensitivity (``lapq.sensitivity``) on a copy wrapped at the base width
   (8), Lp clips at ``p``.
4. The integer linear program (``lapq.allocation``) on the additive model;
   the allocation becomes per-layer overrides of the quantizer settings, so
   the search, rounding, checkpoint, reload and export see ordinary layers
   of their own widths.
5. The check of the additive model: the loss of the whole allocation (Lp
   clips, nearest rounding) against its prediction, and the rank
   correlation of predicted and measured pairs of probes.
"""
import copy
import json
import os.path as osp
import random
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..quant.grids import check_bits, check_type
from ..quant.wrap import QuantSettings, plan_layers, quantize_model
from .allocation import (Allocation, LayerOptions, Option, all_options,
                         allocate, bops)
from .calib import CalibrationSet
from .chain import build_chain, classifier_logits
from .initialize import ClipInitializer, InitSettings
from .objective import CalibrationObjective
from .sensitivity import INPUT, WEIGHT, loss_of_widths, measure_sensitivity

BUDGET_KINDS = ('bops', 'bops_of', 'weight_bytes', 'weight_bits_avg',
                'latency')
FLOAT_BITS = 32  # what a float tensor counts in BOPs and bits


def split_width(text) -> Optional[Tuple[int, int]]:
    """'w4a8' -> (4, 8) (any case); None when it is not of that form."""
    m = re.fullmatch(r'w(\d+)a(\d+)', str(text).lower())
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_width(text) -> Option:
    """'w4a4' -> (4, 4) with both widths in 2..16; a one-line error
    otherwise."""
    width = split_width(text)
    if width is None:
        raise ValueError(f"mixed.budget.bops_of={text!r} is not a width "
                         "like 'w4a4'")
    return (check_bits(width[0], 'bops_of weight bits'),
            check_bits(width[1], 'bops_of activation bits'))


@dataclass
class MixedSettings:
    """``quantizer.mixed``: the budget and the candidate widths."""

    budget: dict
    w_candidates: Sequence[int] = (2, 3, 4, 8)
    a_candidates: Sequence[int] = (4, 8)
    base_bits: int = 8
    p: float = 2.0  # the Lp exponent of every probe's clip
    free_first_last: bool = False
    check_pairs: int = 12  # pairs of probes measured to check the model

    def __post_init__(self):
        if not isinstance(self.budget, dict):
            raise ValueError(f'mixed.budget={self.budget!r} must be a dict '
                             "such as dict(bops_of='w4a4')")
        budget = dict(self.budget)
        unknown = [k for k in budget if k not in BUDGET_KINDS + ('table', )]
        if unknown:
            raise ValueError(f'mixed.budget key {unknown[0]!r} is unknown: '
                             f'use one of {", ".join(BUDGET_KINDS)}')
        kinds = [k for k in budget if k in BUDGET_KINDS]
        if len(kinds) != 1:
            raise ValueError(f'mixed.budget gives {len(kinds)} budgets '
                             f'({", ".join(kinds) or "none"}): give exactly '
                             f'one of {", ".join(BUDGET_KINDS)}')
        self.kind = kinds[0]
        if ('table' in budget) != (self.kind == 'latency'):
            raise ValueError("mixed.budget: a latency budget needs its table"
                             " (dict(latency=MS, table='latency.json'), "
                             'written by tools/latency_table.py) and only it'
                             ' takes one')
        if self.kind == 'bops_of':
            self.uniform = parse_width(budget['bops_of'])
        else:
            self.uniform = None
            check_type(f'mixed.budget.{self.kind}', budget[self.kind], float)
            if budget[self.kind] <= 0:
                raise ValueError(f'mixed.budget.{self.kind} must be > 0')
        self.w_candidates = tuple(self.w_candidates)
        self.a_candidates = tuple(self.a_candidates)
        for key in ('w_candidates', 'a_candidates'):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                raise ValueError(f'mixed.{key}={list(values)} must be a '
                                 'non-empty list of distinct widths')
        if self.uniform is not None:
            # The uniform point of the budget is always an option, so the
            # allocation can only predict better than it (a W3A3 budget
            # with 4- and 8-bit inputs only would force 2-bit weights).
            self.w_candidates = tuple(sorted(set(self.w_candidates) |
                                             {self.uniform[0]}))
            self.a_candidates = tuple(sorted(set(self.a_candidates) |
                                             {self.uniform[1]}))
        try:
            all_options(self.w_candidates, self.a_candidates)
        except ValueError as exc:
            raise ValueError(f'mixed: {exc}: use widths from 2 to 16') \
                from None
        check_bits(self.base_bits, 'mixed.base_bits')
        check_type('mixed.p', self.p, float)
        check_type('mixed.free_first_last', self.free_first_last, bool)
        check_type('mixed.check_pairs', self.check_pairs, int)
        if self.p < 1:
            raise ValueError(f'mixed.p={self.p} must be >= 1')

    def to_dict(self) -> dict:
        return dict(budget=dict(self.budget),
                    w_candidates=list(self.w_candidates),
                    a_candidates=list(self.a_candidates),
                    base_bits=self.base_bits, p=self.p,
                    free_first_last=self.free_first_last,
                    check_pairs=self.check_pairs)


@dataclass
class LayerCost:
    """What a layer's cost depends on, and which of its widths are free."""

    name: str
    macs: int
    params: int
    w_bits: Optional[int]  # the planned (fixed) widths; None: float
    a_bits: Optional[int]
    free_w: bool = False
    free_a: bool = False

    def uniform_option(self, uniform: Option) -> Option:
        """This layer's widths in the model of uniform width ``uniform``
        (a fixed width stays)."""
        return (uniform[0] if self.free_w else self.w_bits,
                uniform[1] if self.free_a else self.a_bits)


def option_bops(macs: int, option) -> float:
    """BOPs of a layer at ``option``, a float tensor (None) at 32 bits."""
    w, a = option
    return bops(macs, (w or FLOAT_BITS, a or FLOAT_BITS))


def layer_macs(model: nn.Module, probe: torch.Tensor) -> Dict[str, int]:
    """Multiply-accumulates per image of every Conv2d / Linear layer, from
    one probe forward (a layer called twice counts twice)."""
    macs: Dict[str, int] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(layer, args, out):
        per_out = layer.weight[0].numel()  # (C_in / groups) x k_h x k_w
        positions = out.numel() // max(1, out.shape[0])
        name = names[id(layer)]
        macs[name] = macs.get(name, 0) + positions * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            classifier_logits(model, probe[:1])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return macs


def layer_costs(model: nn.Module, probe: torch.Tensor, quant: QuantSettings,
                free_first_last: bool = False) -> List[LayerCost]:
    """The quantized Conv2d / Linear layers (module order) with their MACs,
    parameters, planned widths and which widths are free: a width is free
    when it follows the uniform width (planned at 2 and at 3 bits), so the
    first/last policy and the user's overrides keep theirs."""
    if quant.act_quant != 'layer_inputs':
        raise ValueError("mixed precision needs act_quant='layer_inputs' "
                         "(the budget counts each layer's input bits)")
    edges = 'same' if free_first_last else quant.first_last
    at = {b: {p.name: p for p in plan_layers(
        model, replace(quant, w_bits=b, a_bits=b, first_last=edges))}
        for b in (2, 3)}
    configured = {p.name: p for p in plan_layers(
        model, replace(quant, first_last=edges))}
    macs = layer_macs(model, probe)
    costs = []
    for name, plan in configured.items():
        if name not in macs:  # a pool or an activation: no MACs
            continue
        two, three = at[2][name], at[3][name]
        costs.append(LayerCost(
            name, macs[name], model.get_submodule(name).weight.numel(),
            plan.w_bits, plan.a_bits,
            free_w=(two.w_bits, three.w_bits) == (2, 3),
            free_a=(two.a_bits, three.a_bits) == (2, 3)))
    return costs


def weight_bytes(params: int, bits: Optional[int]) -> int:
    """Bytes of a layer's weight codes in the quantized checkpoint (two per
    byte at 4 bits and below, one up to 8, two up to 16; float: 4)."""
    if bits is None:
        return 4 * params
    if bits <= 4:
        return (params + 1) // 2
    return params if bits <= 8 else 2 * params


def read_latency_table(path: str) -> Dict[str, Dict[str, float]]:
    """``{layer: {'w4a4': ms, ...}}`` as written by tools/latency_table.py."""
    if not osp.isfile(path):
        raise ValueError(f'latency table {path} does not exist: write it '
                         'with tools/latency_table.py CONFIG --out PATH')
    with open(path) as f:
        table = json.load(f)
    return table.get('layers', table)


class CostModel:
    """Each layer's options and their costs in the budget's units."""

    def __init__(self, costs: Sequence[LayerCost], settings: MixedSettings,
                 latency: Optional[Dict[str, Dict[str, float]]] = None):
        self.costs, self.settings, self.kind = list(costs), settings, \
            settings.kind
        self.latency = latency
        if self.kind == 'latency':
            names = {c.name for c in self.costs}
            if set(latency) != names:
                odd = sorted(set(latency) ^ names)
                raise ValueError(
                    f"latency table {settings.budget['table']} was measured "
                    f'on another model (layers differ, e.g. {odd[0]}): '
                    'write it for this config with tools/latency_table.py')

    def options(self, cost: LayerCost) -> List[Option]:
        ws = self.settings.w_candidates if cost.free_w else (cost.w_bits, )
        as_ = self.settings.a_candidates if cost.free_a else (cost.a_bits, )
        return [(w, a) for w in ws for a in as_]

    def cost(self, layer: LayerCost, option: Option) -> float:
        w, a = option
        if self.kind in ('bops', 'bops_of'):
            return option_bops(layer.macs, option)
        if self.kind == 'weight_bytes':
            return float(weight_bytes(layer.params, w))
        if self.kind == 'weight_bits_avg':
            return float(layer.params * (w or FLOAT_BITS))
        key = option_label(option)
        row = self.latency[layer.name]
        if key not in row:
            raise ValueError(
                f"latency table {self.settings.budget['table']} has no "
                f'{key} entry for {layer.name}: measure every candidate '
                'width with tools/latency_table.py')
        return float(row[key])

    def total(self, choice: Dict[str, Option]) -> float:
        return float(sum(self.cost(c, choice[c.name]) for c in self.costs))

    def uniform_total(self, uniform: Option) -> float:
        return self.total({c.name: c.uniform_option(uniform)
                           for c in self.costs})

    def budget(self) -> float:
        """The budget in cost units."""
        value = self.settings.budget.get(self.kind)
        if self.kind == 'bops_of':
            return self.uniform_total(self.settings.uniform)
        if self.kind == 'weight_bits_avg':
            return float(value) * sum(c.params for c in self.costs)
        return float(value)

    def minimum(self) -> float:
        return float(sum(min(self.cost(c, o) for o in self.options(c))
                         for c in self.costs))

    def check_feasible(self) -> None:
        """A one-line error when even the smallest candidates exceed the
        budget."""
        budget, lowest = self.budget(), self.minimum()
        if budget < lowest:
            shown = self.settings.budget.get(self.kind)
            raise ValueError(
                f'mixed.budget {self.kind}={shown!r} ({budget:.6g} '
                f'{self.unit()}) is below {lowest:.6g}, what the smallest '
                'candidate widths cost: raise the budget or add smaller '
                'candidates')

    def unit(self) -> str:
        return {'bops': 'BOPs', 'bops_of': 'BOPs', 'weight_bytes': 'bytes',
                'weight_bits_avg': 'weight bits', 'latency': 'ms'}[self.kind]


def cost_model(model: nn.Module, probe: torch.Tensor, quant: QuantSettings,
               settings: MixedSettings) -> CostModel:
    """The costs of ``model``'s layers under ``settings``' budget, checked
    to be feasible: what a run checks before any work."""
    latency = read_latency_table(settings.budget['table']) \
        if settings.kind == 'latency' else None
    model_costs = CostModel(layer_costs(model, probe, quant,
                                        settings.free_first_last),
                            settings, latency)
    if not any(c.free_w or c.free_a for c in model_costs.costs):
        raise ValueError('mixed precision has no layer to choose widths '
                         'for: every layer is fixed by first_last or '
                         'overrides')
    model_costs.check_feasible()
    return model_costs


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
                                 first_last=edges))
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
                               settings.p, use_cache=cache_bytes > 0,
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
    check = _check_additivity(objective, base, allocation, sens, costs,
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
    record = dict(
        settings=settings.to_dict(), kind=settings.kind, unit=costs.unit(),
        budget=budget, used=allocation.cost, minimum=costs.minimum(),
        predicted_loss_increase=allocation.predicted_loss_increase,
        uniform={f'w{w}a{a}': costs.uniform_total((w, a))
                 for w, a in all_options(settings.w_candidates,
                                         settings.a_candidates)},
        layers=[dict(name=c.name, macs=c.macs, params=c.params,
                     free_w=c.free_w, free_a=c.free_a,
                     w_bits=allocation.choice[c.name][0],
                     a_bits=allocation.choice[c.name][1],
                     cost=costs.cost(c, allocation.choice[c.name]))
                for c in costs.costs],
        sensitivity=sens.to_dict(), check=check,
        seconds=time.perf_counter() - t0)
    return MixedResult(overrides, record)


def _check_additivity(objective, base, allocation: Allocation, sens,
                      costs: CostModel, settings: MixedSettings, seed: int,
                      reduce_hist, hist_bins: int) -> dict:
    """Predicted against measured: the whole allocation, and pairs of
    single probes drawn at random (``seed``)."""
    from scipy.stats import spearmanr
    base_bits = settings.base_bits
    measured = loss_of_widths(
        objective, base, _tensor_widths(costs, allocation.choice, base_bits),
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
            objective, base, _tensor_widths(costs, uniform, base_bits),
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


def _tensor_widths(costs: CostModel, choice: Dict[str, Option],
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


def plan_costs(plans, macs: Dict[str, int], params: Dict[str, int]
               ) -> Dict[str, float]:
    """BOPs and weight-code bytes of a quantized model from its layer plans
    (the layers of ``macs``; float tensors count 32 bits), for the
    benchmark's Pareto plots of uniform and mixed rows alike."""
    bops = size = 0
    for plan in plans:
        if plan.name in macs:
            bops += option_bops(macs[plan.name], (plan.w_bits, plan.a_bits))
            size += weight_bytes(params[plan.name], plan.w_bits)
    return dict(bops=float(bops), weight_bytes=float(size))


def option_label(option: Tuple[Optional[int], Optional[int]]) -> str:
    w, a = option
    return f"w{w or 'fp'}a{a or 'fp'}"
