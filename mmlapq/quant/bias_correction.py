"""Empirical bias correction (LAPQ.md section 6, the exportable variant).

For each quantized layer, the expected output error of weight quantization,
E[(W - W_hat) x] per output channel, is measured on calibration inputs and
added to the layer's bias (as ``bias_shift``), so the quantized layer's output
mean matches the float one. Unlike the weight mean shift ('mean'), the weights
stay on their integer grid.
"""
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from .control import quant_layers
from .precision import wide_dtype


@torch.no_grad()
def empirical_bias_correction(model: nn.Module,
                              run_calibration: Callable[[], None],
                              reduce_sum: Optional[Callable] = None
                              ) -> Dict[str, torch.Tensor]:
    """Measure and set ``bias_shift`` of every weight-quantized layer.

    ``run_calibration`` runs the quantized model over the calibration inputs;
    the layers see their quantized inputs. ``reduce_sum`` sums a tensor over
    processes (distributed calibration). Returns the shifts by layer name.
    """
    layers = {n: m for n, m in quant_layers(model).items()
              if m.weight_quantizer is not None}
    sums: Dict[str, torch.Tensor] = {}
    counts: Dict[str, int] = {}

    def make_hook(name):

        def hook(layer, inputs):
            err = layer.weight_error_output(inputs[0])
            channel_dim = 1 if err.dim() > 2 else err.dim() - 1
            dims = [d for d in range(err.dim()) if d != channel_dim]
            total = err.to(wide_dtype(err.device)).sum(dims)
            sums[name] = sums[name] + total if name in sums else total
            counts[name] = counts.get(name, 0) + err.numel() // err.shape[
                channel_dim]

        return hook

    for layer in layers.values():
        layer.bias_shift = None
    handles = [m.register_forward_pre_hook(make_hook(n))
               for n, m in layers.items()]
    try:
        run_calibration()
    finally:
        for h in handles:
            h.remove()
    shifts = {}
    for name, layer in layers.items():
        if name in counts:
            total, count = sums[name], torch.tensor(float(counts[name]),
                                                    dtype=sums[name].dtype,
                                                    device=sums[name].device)
            if reduce_sum is not None:
                total, count = reduce_sum(total), reduce_sum(count)
            shift = (total / count).to(layer.weight.dtype)
            layer.bias_shift = shift
            shifts[name] = shift
    return shifts
