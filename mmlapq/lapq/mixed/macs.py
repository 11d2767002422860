"""Multiply-accumulates of every Conv2d / Linear layer, counted on one
probe forward (what BOPs multiply by the widths)."""
from typing import Dict

import torch
import torch.nn as nn

from ..chain import classifier_logits


def layer_macs(model: nn.Module, probe: torch.Tensor) -> Dict[str, int]:
    """Multiply-accumulates per image of every Conv2d / Linear layer, from
    one probe forward (a layer called twice counts twice). A conv's:
    output H x W x C_out x (C_in / groups) x k_h x k_w."""
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
