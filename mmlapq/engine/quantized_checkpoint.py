"""The quantized checkpoint ``lapq_quantized.pth``: save a quantized model,
and rebuild it from the file and a float model of the same config.

The file holds plain types only (it loads with ``weights_only=True``): the
model's state dict, and in ``meta['lapq']`` the settings, layer plans,
clips, grids, empirical bias shifts and GPTQ's integer levels.
"""
import os.path as osp
from dataclasses import asdict
from typing import List, Optional

import torch
import torch.nn as nn

from ..fileio import atomic_write
from ..quant import Grid, LayerPlan, QuantSettings, quant_layers, \
    quantize_model, quantizers
from .checkpoint import load_state_dict_strict
from .errors import LAPQError

QUANTIZED_CHECKPOINT = 'lapq_quantized.pth'


def quantized_state(model: nn.Module, quantizer, plans) -> dict:
    """What rebuilds a quantized model besides its state dict."""
    layers = quant_layers(model)
    return dict(
        settings=quantizer.settings(),
        channels_last=bool(quantizer.state.channels_last),
        plans=[asdict(p) for p in plans],
        clips={n: q.alpha.cpu() for n, q in quantizers(model).items()},
        grids={n: q.grid.kind for n, q in quantizers(model).items()},
        bias_shift={n: m.bias_shift.cpu() for n, m in layers.items()
                    if m.bias_shift is not None},
        # GPTQ's chosen integer levels (at most 8 bits: int16 holds them)
        weight_codes={n: m.weight_codes.to(torch.int16).cpu()
                      for n, m in layers.items()
                      if getattr(m, 'weight_codes', None) is not None})


def save_quantized_checkpoint(model: nn.Module, quantizer, plans,
                              path: str, config: Optional[str] = None) -> str:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = dict(state_dict=state,
                   meta=dict(lapq=quantized_state(model, quantizer, plans),
                             config=osp.abspath(config) if config else None))
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def apply_quantized_state(model: nn.Module, state_dict: dict,
                          lapq_state: dict) -> List[LayerPlan]:
    """Wrap the float ``model`` as the saved one was and load its state."""
    quant = QuantSettings(**lapq_state['settings']['quant'])
    plans = quantize_model(model, quant)
    load_state_dict_strict(model, state_dict, 'the quantized checkpoint')
    qs = quantizers(model)
    if set(qs) != set(lapq_state['clips']):
        raise LAPQError('the quantized checkpoint was made for other layers: '
                        'use it with the config it was made with')
    for name, q in qs.items():
        q.set_grid(Grid(q.bits, lapq_state['grids'][name]))
        q.set_alpha(lapq_state['clips'][name])
    layers = quant_layers(model)
    for name, shift in lapq_state.get('bias_shift', {}).items():
        layers[name].bias_shift = shift.to(layers[name].weight.device)
    for name, codes in lapq_state.get('weight_codes', {}).items():
        layers[name].set_weight_codes(codes.float())
    return [LayerPlan(**p) for p in lapq_state['plans']] or plans


def load_quantized_checkpoint(model: nn.Module, path: str
                              ) -> List[LayerPlan]:
    """Rebuild the quantized model saved in ``path`` into ``model`` (a float
    model of the same config), in the memory format of the run that wrote
    it. Returns the layer plans."""
    from mmengine.runner.checkpoint import _load_checkpoint
    ckpt = _load_checkpoint(path, map_location='cpu')
    lapq_state = ckpt.get('meta', {}).get('lapq') \
        if isinstance(ckpt, dict) else None
    if not lapq_state:
        raise LAPQError(f'{path} is not a quantized checkpoint of mmlapq: '
                        'pass the lapq_quantized.pth of a run')
    plans = apply_quantized_state(model, ckpt['state_dict'], lapq_state)
    channels_last = lapq_state.get(
        'channels_last', lapq_state['settings'].get('channels_last'))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return plans
