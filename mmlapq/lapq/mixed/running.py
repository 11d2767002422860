"""What the wrapped model runs, measured from the model itself
(``quant.running``), not from the plan: the budget the allocated model
uses, checked against the allocation, and the BOPs and weight bytes of
any quantized model (the benchmark's columns)."""
from typing import Dict

import torch.nn as nn

from ...quant.running import running_widths
from ..allocation import within_budget
from .costs import CostModel, LayerCost, option_bops, option_label, \
    weight_bytes
from .latency_file import read_latency_table
from .settings import MixedSettings


def model_costs(model: nn.Module, macs: Dict[str, int]) -> Dict[str, float]:
    """BOPs (a float tensor at 32 bits) and weight bytes (packed codes, 4
    per float parameter) of the layers of ``macs`` (``layer_macs``) at the
    widths ``model`` runs them."""
    widths = running_widths(model)
    total_bops = total_bytes = 0.0
    for name, layer_macs in macs.items():
        total_bops += option_bops(layer_macs, widths[name])
        total_bytes += weight_bytes(
            model.get_submodule(name).weight.numel(), widths[name][0])
    return dict(bops=float(total_bops), weight_bytes=float(total_bytes))


def check_running(model: nn.Module, record: dict,
                  settings: MixedSettings) -> float:
    """The budget the wrapped ``model`` uses, in the budget's units, from
    the widths it runs; a ValueError naming the first layer whose widths
    differ from the allocation's (``record``, as ``choose_widths`` made
    it), or when the model uses more than the budget."""
    widths = running_widths(model)
    costs, choice = [], {}
    for row in record['layers']:
        name = row['name']
        if name not in widths:
            raise ValueError(f'the allocation names layer {name}, which the '
                             'wrapped model does not have')
        allocated = (row['w_bits'], row['a_bits'])
        if widths[name] != allocated:
            raise ValueError(
                f'layer {name} runs at {option_label(widths[name])} but '
                f'the allocation chose {option_label(allocated)}: the '
                'report would not say what the model computes (a bug of '
                'mmlapq: please report it with the config)')
        costs.append(LayerCost(name, row['macs'], row['params'],
                               row['w_bits'], row['a_bits']))
        choice[name] = widths[name]
    latency = read_latency_table(settings.budget['table']) \
        if settings.kind == 'latency' else None
    # The widths are those that run already: no int16-safe rule on top.
    used = CostModel(costs, settings, latency).total(choice)
    if not within_budget(used, record['budget']):
        raise ValueError(f"the quantized model uses {used:.6g} "
                         f"{record['unit']}, more than the budget "
                         f"{record['budget']:.6g}")
    return used
