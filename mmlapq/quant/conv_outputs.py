"""Output quantizers of the convs whose outputs a float op reads (the
integer target).

A quantized conv runs on an integer kernel (onnxruntime's ``QLinearConv``)
only if its output is quantized too. Our scheme quantizes a tensor where a
quantized layer reads it, which covers a conv followed by a ReLU, a max pool
and the next conv, but not a conv whose output goes to a float op: the
LayerNorm after ConvNeXt's depthwise convs and stem, the residual add after
its downsampling convs, the class-token concat after a ViT's patch
embedding, a Swish or an SE block. Such a conv stays a float ``Conv`` in the
runtime, between a ``DequantizeLinear`` and the float op.

With ``QuantSettings.conv_output_bits`` set (8 by default; None turns
it off), each such conv gets an output quantizer of those bits: a child module
``<conv>.output`` (an ``nn.Identity`` with an input quantizer, clip
``<conv>.output.input``) that the conv calls last. The float op then reads
the dequantized output, as in onnxruntime's own static int8 models,
and the PyTorch model computes that too: the clip is initialised, searched
and guarded like any other, and the export writes ``QuantizeLinear ->
DequantizeLinear`` after the conv, which the runtime fuses into the conv.

Which convs: found by running the wrapped model once on an example batch
and following each conv's output through ops that do not change which
values are quantized (ReLU, max pool, views, permutes, dropout); a conv
whose output reaches any other op outside a quantizer is read in float.
A conv followed by a ReLU and then a float op is quantized before the
ReLU (on a signed grid, the ReLU running in float after the
``DequantizeLinear``). Linear layers are left alone: a runtime already
runs a Linear with quantized inputs and a float output as an integer
kernel (``MatMulIntegerToFloat``), so an output quantizer would only add
error.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from .grids import Grid
from .qmodules import (QuantConv2d, QuantLinear, TensorQuantizer,
                       quantize_module_input)

OUTPUT_CHILD = 'output'

# Ops whose output holds the same values as their input, or a subset, or
# their max (so the quantizer after them sees the conv's values), and
# ReLUs, whose zero is the unsigned grid's lower bound: what a runtime
# moves a QuantizeLinear through or fuses into the conv before it.
_PASS_THROUGH = {
    'relu', 'relu_', 'relu6', 'hardtanh', 'hardtanh_', 'max_pool2d',
    'max_pool2d_with_indices', 'flatten', 'view', 'reshape', 'permute',
    'transpose', 'contiguous', 'dropout', 'squeeze', 'unsqueeze',
}


def _name(func) -> str:
    return getattr(func, '__name__', str(func)).split('.')[-1]


def _tensors(value) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class _FloatReaders(TorchFunctionMode):
    """Follows conv outputs through one forward (see the module doc)."""

    def __init__(self):
        super().__init__()
        self.inside = 0  # > 0 inside a quantizer or a quantized layer
        self.source: Dict[int, str] = {}  # id(tensor) -> conv it came from
        self.keep: List[torch.Tensor] = []  # so that ids stay unique
        self.read_in_float: Dict[str, str] = {}  # conv -> the op

    def mark(self, tensor: torch.Tensor, conv: str) -> None:
        self.source[id(tensor)] = conv
        self.keep.append(tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.inside:
            return out
        convs = {self.source[id(t)] for t in _tensors((args, kwargs))
                 if id(t) in self.source}
        results = _tensors(out)
        if not convs or not results:
            return out  # a shape query, or not reading a conv output
        if _name(func) in _PASS_THROUGH and len(convs) == 1:
            for t in results:
                self.mark(t, next(iter(convs)))
        else:
            for conv in convs:
                self.read_in_float.setdefault(conv, _name(func))
            for t in results:  # an in-place op's result is no conv output
                self.source.pop(id(t), None)
        return out


def _copy(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def _integer_convs(model: nn.Module) -> Dict[str, QuantConv2d]:
    """Convs that can run on integer kernels: weight and input quantized."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, QuantConv2d) and m.weight_quantizer is not None
            and m.input_grid_quantizer() is not None}


def convs_read_in_float(model: nn.Module, example: torch.Tensor
                        ) -> Dict[str, str]:
    """{conv name: the first float op that reads its output} for the
    integer-kernel convs of the wrapped ``model``, from one forward of
    the first two images of ``example`` in eval mode (the model's mode is
    restored): which ops read a tensor does not depend on the batch."""
    convs = _integer_convs(model)
    readers = _FloatReaders()
    handles = []
    inner = [m for m in model.modules()
             if isinstance(m, (TensorQuantizer, QuantConv2d, QuantLinear))]
    # The clips are not set yet: each quantizer passes a copy through (a
    # new tensor: what comes out of a quantizer is not a conv's output),
    # and the weighted layers compute in float (their inside is not
    # followed anyway).
    for module in inner:
        if isinstance(module, TensorQuantizer):
            module.forward = _copy
    enabled = {m: m.quant_enabled for m in inner
               if isinstance(m, (QuantConv2d, QuantLinear))}
    for module in enabled:
        module.quant_enabled = False

    def enter(*_):
        readers.inside += 1

    def leave(*_):
        readers.inside -= 1

    for module in inner:
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    for name, conv in convs.items():
        handles.append(conv.register_forward_hook(
            lambda _, __, out, name=name: readers.mark(out, name)))
    training = model.training
    try:
        model.eval()  # no BN statistics move, no drop path runs
        with torch.no_grad(), readers:
            model(example[:2])
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
        for module in inner:
            module.__dict__.pop('forward', None)
        for module, flag in enabled.items():
            module.quant_enabled = flag
    return {n: readers.read_in_float[n] for n in convs
            if n in readers.read_in_float}


def quantize_conv_outputs(model: nn.Module, names: Sequence[str], bits: int,
                          kind: str = 'unsigned'
                          ) -> List[Tuple[str, str, int]]:
    """Give each conv in ``names`` an output quantizer on a ``bits``-bit
    grid of ``kind`` (with ``a_signed='auto'`` the clip init sets the kind
    from the data, as for inputs), on the conv's device. Returns (module
    name, class name, bits) of every quantizer added."""
    added = []
    for name in names:
        conv = model.get_submodule(name)
        if not isinstance(conv, QuantConv2d):
            raise ValueError(f'{name} is not a quantized conv: an output '
                             'quantizer goes on a QuantConv2d')
        if output_quantizer_module(conv) is None:
            conv.add_module(OUTPUT_CHILD, quantize_module_input(
                nn.Identity(), Grid(bits, kind)).to(conv.weight.device))
        added.append((f'{name}.{OUTPUT_CHILD}', 'ConvOutput', bits))
    return added


def output_quantizer_module(conv: nn.Module) -> Optional[nn.Module]:
    """The output quantizer child of a conv, or None."""
    return conv._modules.get(OUTPUT_CHILD)
