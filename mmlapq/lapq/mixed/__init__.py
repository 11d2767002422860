"""Mixed precision under a budget: each layer's weight and input widths
chosen by LAPQ's own loss, then LAPQ as usual on that allocation.

    quantizer.mixed = dict(budget=dict(bops_of='w4a4'),
                           w_candidates=(2, 3, 4, 8), a_candidates=(4, 8))

One job per module:

- ``settings``: the budget and candidate widths, checked before any work;
- ``macs``: every Conv2d / Linear layer's multiply-accumulates;
- ``costs``: each layer's options and their cost in the budget's units
  (``bops``: MACs x weight bits x input bits, a float tensor at 32 bits;
  ``bops_of='w4a4'``: the BOPs of that uniform width; ``weight_bytes``:
  the packed weight codes; ``weight_bits_avg``: mean bits per Conv2d /
  Linear weight, a float one at 32; ``latency``: a measured table);
  which widths are free (those that follow the uniform width: the
  first/last policy, the user's overrides and float layers keep theirs);
- ``latency_file``: the latency table of ``tools/latency_table.py``;
- ``choose``: the sensitivity (``lapq.sensitivity``) on a copy wrapped at
  the base width, the integer linear program (``lapq.allocation``), and
  the allocation as per-layer overrides, merged key by key into the
  user's, so the search, rounding, checkpoint, reload and export see
  ordinary layers of their own widths;
- ``additivity``: the check of the additive model the program trusts;
- ``running``: what the wrapped model runs, read off the model: the
  budget it uses (the report's ``used``) checked against the allocation,
  and the BOPs and bytes of any quantized model.
"""
from .choose import MixedResult, choose_widths
from .costs import (FLOAT_BITS, CostModel, LayerCost, cost_model,
                    layer_costs, option_bops, option_label, weight_bytes)
from .latency_file import read_latency_table
from .macs import layer_macs
from .running import check_running, model_costs
from .settings import BUDGET_KINDS, MixedSettings, parse_width, split_width

__all__ = [
    'BUDGET_KINDS', 'FLOAT_BITS', 'CostModel', 'LayerCost', 'MixedResult',
    'MixedSettings', 'check_running', 'choose_widths', 'cost_model',
    'layer_costs', 'layer_macs', 'model_costs', 'option_bops',
    'option_label', 'parse_width', 'read_latency_table', 'split_width',
    'weight_bytes'
]
