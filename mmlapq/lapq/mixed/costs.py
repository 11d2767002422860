"""What each layer costs at each width, in the budget's units, and which
of its widths the allocation may choose.

Every Conv2d / Linear layer the forward calls is counted, float ones too
(at 32 bits: a float first layer is part of the model's BOPs). A layer's
cost at an option is that of the widths it then runs at
(``quant.wrap.running_widths_of``: with ``int16_safe_weights`` an 8-bit
weight of an 8-bit-input layer runs at 7 bits).
"""
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ...quant.int_weights import packed_bytes
from ...quant.wrap import QuantSettings, plan_layers, running_widths_of
from ..allocation import Option, bops, within_budget
from .latency_file import read_latency_table
from .macs import layer_macs
from .settings import MixedSettings

FLOAT_BITS = 32  # what a float tensor counts in BOPs and bits
Widths = Tuple[Optional[int], Optional[int]]  # None: floating point


def option_bops(macs: int, option: Widths) -> float:
    """BOPs of a layer at ``option``, a float tensor (None) at 32 bits."""
    w, a = option
    return bops(macs, (w or FLOAT_BITS, a or FLOAT_BITS))


def weight_bytes(params: int, bits: Optional[int]) -> int:
    """Bytes of a layer's weight in the quantized checkpoint: its packed
    codes (``quant.int_weights``), or 4 per float parameter."""
    return 4 * params if bits is None else packed_bytes(params, bits)


def option_label(option: Widths) -> str:
    """(4, 8) -> 'w4a8'; a float tensor is 'fp' ('wfpafp')."""
    w, a = option
    return f"w{w or 'fp'}a{a or 'fp'}"


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

    def uniform_option(self, uniform: Option) -> Widths:
        """This layer's widths in the model of uniform width ``uniform``
        (a fixed width stays)."""
        return (uniform[0] if self.free_w else self.w_bits,
                uniform[1] if self.free_a else self.a_bits)


def layer_costs(model: nn.Module, probe: torch.Tensor, quant: QuantSettings,
                free_first_last: bool = False) -> List[LayerCost]:
    """Every Conv2d / Linear layer the forward calls (module order) with
    its MACs, parameters, planned widths (None: float; before the
    int16-safe rule, which ``CostModel.runs_at`` applies) and which widths
    are free: a width is free when it follows the uniform width (planned
    at 2 and at 3 bits), so the first/last policy, the user's overrides
    and the layers left float keep theirs."""
    if quant.act_quant != 'layer_inputs':
        raise ValueError("mixed precision needs act_quant='layer_inputs' "
                         "(the budget counts each layer's input bits)")
    # Planned widths as configured: the int16-safe rule depends on the
    # input width the allocation chooses, so CostModel.runs_at applies it.
    planned = replace(quant, int16_safe_weights=False,
                      first_last='same' if free_first_last
                      else quant.first_last)
    at = {b: {p.name: p for p in plan_layers(
        model, replace(planned, w_bits=b, a_bits=b))} for b in (2, 3)}
    configured = {p.name: p for p in plan_layers(model, planned)}
    macs = layer_macs(model, probe)
    costs = []
    for name, module in model.named_modules():
        if name not in macs:  # not a Conv2d / Linear, or never called
            continue
        plan = configured.get(name)
        two, three = at[2].get(name), at[3].get(name)

        def follows(key: str) -> bool:
            return two is not None and three is not None and \
                (getattr(two, key), getattr(three, key)) == (2, 3)

        costs.append(LayerCost(
            name, macs[name], module.weight.numel(),
            plan.w_bits if plan else None, plan.a_bits if plan else None,
            free_w=follows('w_bits'), free_a=follows('a_bits')))
    return costs


class CostModel:
    """Each layer's options and their costs in the budget's units."""

    def __init__(self, costs: Sequence[LayerCost], settings: MixedSettings,
                 latency: Optional[Dict[str, Dict[str, float]]] = None,
                 quant: Optional[QuantSettings] = None):
        self.costs, self.settings, self.kind = list(costs), settings, \
            settings.kind
        self.latency = latency
        self.quant = quant or QuantSettings()
        if self.kind == 'latency':
            names = {c.name for c in self.costs}
            if set(latency) != names:
                odd = sorted(set(latency) ^ names)
                raise ValueError(
                    f"latency table {settings.budget['table']} was measured "
                    f'on another model (layers differ, e.g. {odd[0]}): '
                    'write it again for this config with '
                    'tools/latency_table.py')

    def options(self, cost: LayerCost) -> List[Widths]:
        ws = self.settings.w_candidates if cost.free_w else (cost.w_bits, )
        as_ = self.settings.a_candidates if cost.free_a else (cost.a_bits, )
        return [(w, a) for w in ws for a in as_]

    def runs_at(self, option: Widths) -> Widths:
        """The widths a layer given ``option`` runs at."""
        return running_widths_of(self.quant, *option)

    def cost(self, layer: LayerCost, option: Widths) -> float:
        w, a = self.runs_at(option)
        if self.kind == 'latency':  # the table is keyed by what ran
            key = option_label((w, a))
            row = self.latency[layer.name]
            if key not in row:
                raise ValueError(
                    f"latency table {self.settings.budget['table']} has no "
                    f'{key} entry for {layer.name}: write it again with '
                    'tools/latency_table.py, with every candidate width '
                    "and this config's settings")
            return float(row[key])
        if self.kind in ('bops', 'bops_of'):
            return option_bops(layer.macs, (w, a))
        if self.kind == 'weight_bytes':
            return float(weight_bytes(layer.params, w))
        return float(layer.params * (w or FLOAT_BITS))  # weight_bits_avg

    def total(self, choice: Dict[str, Widths]) -> float:
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
        if not within_budget(lowest, budget):
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
                            settings, latency, quant)
    if not any(c.free_w or c.free_a for c in model_costs.costs):
        raise ValueError('mixed precision has no layer to choose widths '
                         'for: every layer is fixed by first_last or '
                         'overrides')
    model_costs.check_feasible()
    return model_costs
