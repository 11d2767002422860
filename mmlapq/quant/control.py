"""Model-level switches and the named clip vector that the search optimises."""
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, Iterator, Mapping

import torch
import torch.nn as nn

from .qmodules import QUANT_LAYER_TYPES, TensorQuantizer


def quant_layers(model: nn.Module) -> 'OrderedDict[str, nn.Module]':
    """Quantized layers of ``model`` by name, in module order."""
    return OrderedDict((n, m) for n, m in model.named_modules()
                       if isinstance(m, QUANT_LAYER_TYPES))


def quantizers(model: nn.Module) -> 'OrderedDict[str, TensorQuantizer]':
    """Every tensor quantizer, named ``<layer>.input`` / ``<layer>.weight``
    (``<layer>.output`` for a quantized ReLU), in layer order with a layer's
    activation before its weight."""
    out = OrderedDict()
    for name, layer in quant_layers(model).items():
        out.update(layer_quantizers(name, layer))
    return out


def layer_quantizers(name: str, layer: nn.Module
                     ) -> 'OrderedDict[str, TensorQuantizer]':
    """The quantizers of one quantized layer by their full names."""
    out = OrderedDict()
    if layer.act_quantizer is not None:
        out[f'{name}.{layer.act_slot}'] = layer.act_quantizer
    if layer.weight_quantizer is not None:
        out[f'{name}.weight'] = layer.weight_quantizer
    return out


def get_clips(model: nn.Module) -> 'OrderedDict[str, torch.Tensor]':
    return OrderedDict((n, q.alpha.detach().clone())
                       for n, q in quantizers(model).items())


def set_clips(model: nn.Module, clips: Mapping[str, torch.Tensor]) -> None:
    """Set clips by name; an unknown name is an error."""
    known = quantizers(model)
    unknown = [n for n in clips if n not in known]
    if unknown:
        raise KeyError(f'unknown quantizer names {unknown[:3]}: names look '
                       f'like {list(known)[:2]}')
    for name, alpha in clips.items():
        known[name].set_alpha(alpha)


def set_quant_enabled(model: nn.Module, enabled: bool) -> Dict[str, bool]:
    """Switch every quantized layer on or off; return the previous states."""
    previous = {}
    for name, layer in quant_layers(model).items():
        previous[name] = layer.quant_enabled
        layer.quant_enabled = enabled
    return previous


@contextmanager
def quantization_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run the wrapped model as its float original inside the block."""
    previous = set_quant_enabled(model, False)
    try:
        yield model
    finally:
        for name, layer in quant_layers(model).items():
            layer.quant_enabled = previous.get(name, True)


@contextmanager
def clips_applied(model: nn.Module, clips: Mapping[str, torch.Tensor],
                  plain: bool = True) -> Iterator[nn.Module]:
    """Run the model at ``clips`` inside the block, then restore its clips;
    with ``plain``, also without bias shifts and with nearest rounding (the
    layer-wise init as it was evaluated), restored afterwards too."""
    saved = get_clips(model)
    layers = quant_layers(model)
    extras = {n: (getattr(m, 'bias_shift', None),
                  getattr(m, 'weight_codes', None))
              for n, m in layers.items()}
    set_clips(model, clips)
    if plain:
        for name, (shift, codes) in extras.items():
            if shift is not None:
                layers[name].bias_shift = None
            if codes is not None:
                layers[name].set_weight_codes(None)
    try:
        yield model
    finally:
        set_clips(model, saved)
        if plain:
            for name, (shift, codes) in extras.items():
                if shift is not None:
                    layers[name].bias_shift = shift
                if codes is not None:
                    layers[name].set_weight_codes(codes)


@contextmanager
def float_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every quantized layer of ``model`` computes with its
    float weight and float bias (its activations stay quantized): the
    activations' share of an output error."""
    saved = [(layer, layer.weight_quantizer, layer.weight_codes)
             for layer in quant_layers(model).values()
             if getattr(layer, 'weight_quantizer', None) is not None]
    for layer, _, _ in saved:
        layer.weight_codes = None
        layer.weight_quantizer = None
    try:
        yield model
    finally:
        for layer, wq, codes in saved:
            layer.weight_quantizer = wq
            layer.weight_codes = codes


def activation_quantizers(model: nn.Module) -> list:
    """The activation quantizers of ``model``, each once (a reused ReLU
    shares one), in module order."""
    return list(dict.fromkeys(
        layer.act_quantizer for layer in quant_layers(model).values()
        if layer.act_quantizer is not None))


@contextmanager
def float_activations(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every activation quantizer of ``model`` passes its
    input through (the weights stay quantized): the weights' share of an
    output error."""
    hooks = [q.register_forward_hook(lambda m, inputs, out: inputs[0])
             for q in activation_quantizers(model)]
    try:
        yield model
    finally:
        for hook in hooks:
            hook.remove()
