"""What a wrapped model runs, read off its modules rather than from a plan:
each Conv2d / Linear layer's weight width and the width of the quantizer
its input passes through (its own, or the residual block's that it reads,
``set_input_source``). A report or a budget that counts from here counts
the model, not the intentions."""
from typing import Dict, Optional, Tuple

import torch.nn as nn

from .qmodules import QuantConv2d, QuantLinear

Widths = Tuple[Optional[int], Optional[int]]  # None: floating point


def running_widths(model: nn.Module) -> Dict[str, Widths]:
    """``{layer: (weight bits, input bits)}`` of every Conv2d / Linear
    module of ``model`` (module order); a float tensor is None, so is
    every tensor of a layer whose quantization is switched off."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, (QuantConv2d, QuantLinear)):
            if not module.quant_enabled:
                widths[name] = (None, None)
                continue
            wq, aq = module.weight_quantizer, module.input_grid_quantizer()
            widths[name] = (wq.bits if wq is not None else None,
                            aq.bits if aq is not None else None)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            widths[name] = (None, None)
    return widths
