"""The quantized checkpoint ``lapq_quantized.pth``: save a quantized model,
and rebuild it from the file and a float model of the same config.

The file holds plain types only (it loads with ``weights_only=True``). Each
quantized weight is stored as its integer codes (``meta['lapq']['weights']``,
packed two per byte at 4 bits and below); with the clip (hence the grid
step) they give back exactly the weight the run used. The state dict keeps
what stays float (biases, unquantized layers); ``meta['lapq']`` also holds
the settings, layer plans, clips, grids and empirical bias shifts.

Files of mmlapq before the integer format (float weights in the state dict,
no ``format`` key) still load.
"""
import os.path as osp
from dataclasses import asdict
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from ..fileio import atomic_write
from ..quant import (Grid, LayerPlan, QuantSettings, conv_output_names,
                     quant_layers, quantize_model, quantizers)
from ..quant.equalize import replace_relu6
from ..quant.int_weights import (integer_grid_error, layer_weight_codes,
                                 pack_codes, unpack_codes)
from .checkpoint import load_state_dict_strict
from .errors import LAPQError

QUANTIZED_CHECKPOINT = 'lapq_quantized.pth'
INTEGER_FORMAT = 'integer-weights-1'


def integer_weights(model: nn.Module) -> Dict[str, dict]:
    """The packed integer codes of every quantized weight."""
    out = {}
    for name, layer in quant_layers(model).items():
        wq = layer.weight_quantizer
        if wq is None:
            continue
        reason = integer_grid_error(wq.grid)
        if reason:
            raise LAPQError(f'{name}: {reason}')
        try:
            codes = layer_weight_codes(layer)
        except ValueError as exc:
            raise LAPQError(f'{name}: {exc}') from None
        out[name] = pack_codes(codes.cpu(), wq.grid)
    return out


def quantized_state(model: nn.Module, quantizer, plans) -> dict:
    """What rebuilds a quantized model besides its float state."""
    layers = quant_layers(model)
    return dict(
        format=INTEGER_FORMAT,
        settings=quantizer.settings(),
        channels_last=bool(quantizer.state.channels_last),
        plans=[asdict(p) for p in plans],
        clips={n: q.alpha.cpu() for n, q in quantizers(model).items()},
        grids={n: q.grid.kind for n, q in quantizers(model).items()},
        bias_shift={n: m.bias_shift.cpu() for n, m in layers.items()
                    if getattr(m, 'bias_shift', None) is not None},
        weights=integer_weights(model),
        equalization=quantizer.state.equalization)


def save_quantized_checkpoint(model: nn.Module, quantizer, plans,
                              path: str, config: Optional[str] = None) -> str:
    lapq = quantized_state(model, quantizer, plans)
    stored_as_codes = {f'{name}.weight' for name in lapq['weights']}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()
             if k not in stored_as_codes}
    payload = dict(state_dict=state,
                   meta=dict(lapq=lapq,
                             config=osp.abspath(config) if config else None))
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def apply_quantized_state(model: nn.Module, state_dict: dict,
                          lapq_state: dict) -> List[LayerPlan]:
    """Wrap the float ``model`` as the saved one was and load its state."""
    saved = dict(lapq_state['settings']['quant'])
    # Files written before the integer target computed with float biases.
    saved.setdefault('target', 'fake_quant')
    quant = QuantSettings(**saved)
    # Equalized weights are in the file; what equalization changed in the
    # model's structure (ReLU6 -> ReLU) is redone here.
    replace_relu6(model, (lapq_state.get('equalization') or {}).get(
        'relu6_replaced', []))
    saved_plans = [LayerPlan(**p) for p in lapq_state['plans']]
    try:
        plans = quantize_model(model, quant,
                               conv_outputs=conv_output_names(saved_plans))
    except ValueError as exc:
        raise LAPQError(f'the quantized checkpoint does not fit this '
                        f'model ({exc}): use it with the config it was '
                        'made with') from None
    qs = quantizers(model)
    if set(qs) != set(lapq_state['clips']):
        raise LAPQError('the quantized checkpoint was made for other layers: '
                        'use it with the config it was made with')
    for name, q in qs.items():
        q.set_grid(Grid(q.bits, lapq_state['grids'][name]))
        q.set_alpha(lapq_state['clips'][name])
    layers = quant_layers(model)
    # The integer format: each quantized weight is its codes at the clip.
    codes = {name: unpack_codes(packed)
             for name, packed in lapq_state.get('weights', {}).items()}
    codes.update(lapq_state.get('weight_codes', {}))  # files before it
    codes = {name: c.to(layers[name].weight.device, torch.float32)
             for name, c in codes.items()}
    state_dict = dict(state_dict)
    for name, layer_codes in codes.items():
        key = f'{name}.weight'
        if key not in state_dict:
            state_dict[key] = layers[name].weight_quantizer.dequantize(
                layer_codes).to(layers[name].weight.dtype)
    load_state_dict_strict(model, state_dict, 'the quantized checkpoint')
    for name, shift in lapq_state.get('bias_shift', {}).items():
        layers[name].bias_shift = shift.to(layers[name].weight.device)
    for name, layer_codes in codes.items():
        layers[name].set_weight_codes(layer_codes)
    return saved_plans or plans


def load_quantized_checkpoint(model: nn.Module, path: str
                              ) -> List[LayerPlan]:
    """Rebuild the quantized model saved in ``path`` into ``model`` (a float
    model of the same config), in the memory format of the run that wrote
    it. Returns the layer plans."""
    from mmengine.runner import CheckpointLoader
    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
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
