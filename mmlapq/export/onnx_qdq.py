"""ONNX export of a quantized model in the QDQ format.

How: the quantized model's float twin (plain Conv2d / Linear holding the
dequantized weights and the biases with their empirical shift) is exported
with torch's TorchScript exporter, whose initializers keep the parameters'
names. Then, for each quantized layer, found by its weight's name:

- the weight becomes an integer initializer (INT4 at 4 bits and below from
  opset 21 on, INT8 otherwise) of its codes, followed by a
  ``DequantizeLinear`` with the grid step as scale (per output channel with
  ``axis=0`` where the clips are) and zero point 0;
- the layer's input gets ``QuantizeLinear -> DequantizeLinear`` with the
  step of the input grid, in UINT8 for unsigned grids and INT8 for signed
  ones, and a ``Clip`` to the grid's range before it where the type would
  saturate elsewhere (a narrow signed grid stops at -(2^(b-1)-1); a 4-bit
  grid in an 8-bit type). Activations stay in 8-bit types at every width:
  onnxruntime 1.32's QDQ propagation moves a UINT4 QuantizeLinear in front
  of MaxPool, which has no 4-bit kernel, and the session fails to load.

The result computes what the fake-quantized PyTorch model computes, up to
float rounding of the convolutions and of ``x / scale``. Grids that QDQ
cannot express exactly (the 'midrise' grid: no zero level) and ReLU-output
quantizers (``act_quant='relu_outputs'``) stop the export with an
:class:`ExportError` instead of writing another model.
"""
import copy
import io
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..fileio import atomic_write
from ..quant.control import quant_layers
from ..quant.grids import Grid
from ..quant.int_weights import (code_range, integer_grid_error,
                                 layer_weight_codes, weight_step)
from ..quant.qmodules import QuantAct, QuantConv2d

DEFAULT_OPSET = 21  # the first with INT4 / UINT4 Q and DQ
_EXPORT_OPSET = 17  # what torch's TorchScript exporter writes; converted
_PREFIX = 'model.'  # the twin's attribute in the exported wrapper


class ExportError(ValueError):
    """The model cannot be written as an exact QDQ model (one line)."""


class _Logits(nn.Module):
    """The classifier's forward on preprocessed inputs: class scores."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, mode='tensor')


def _plain_layer(layer: nn.Module) -> nn.Module:
    """A float Conv2d / Linear with the layer's quantized weight and bias."""
    weight, bias = layer.quantized_weight_and_bias()
    if isinstance(layer, QuantConv2d):
        plain = nn.Conv2d(layer.in_channels, layer.out_channels,
                          layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, layer.groups, bias is not None,
                          layer.padding_mode)
    else:
        plain = nn.Linear(layer.in_features, layer.out_features,
                          bias is not None)
    plain.weight = nn.Parameter(weight.detach().clone().contiguous())
    if bias is not None:
        plain.bias = nn.Parameter(bias.detach().clone())
    return plain.to(weight.device)


def float_twin(model: nn.Module) -> Tuple[nn.Module, Dict[str, nn.Module]]:
    """A copy of ``model`` whose quantized layers are plain float layers,
    and the quantized layers by name."""
    if any(isinstance(m, QuantAct) for m in model.modules()):
        raise ExportError("ReLU-output quantizers (act_quant="
                          "'relu_outputs', preset='reference') are not "
                          'exported: quantize with act_quant='
                          "'layer_inputs' to export")
    twin = copy.deepcopy(model).eval()
    layers = quant_layers(twin)
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition('.')
        parent = twin.get_submodule(parent_name) if parent_name else twin
        setattr(parent, child, _plain_layer(layer))
    return twin, layers


def _int_type(grid: Grid, opset: int) -> int:
    """The ONNX element type of ``grid``'s codes (opset 0: 8-bit only)."""
    from onnx import TensorProto
    signed = grid.kind == 'signed'
    if grid.bits <= 4 and opset >= 21:
        return TensorProto.INT4 if signed else TensorProto.UINT4
    if grid.bits <= 8:
        return TensorProto.INT8 if signed else TensorProto.UINT8
    raise ExportError(f'{grid.bits}-bit grids have no ONNX integer type: '
                      'use at most 8 bits')


def _type_range(onnx_type: int) -> Tuple[int, int]:
    from onnx import TensorProto
    return {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15),
            TensorProto.INT8: (-128, 127),
            TensorProto.UINT8: (0, 255)}[onnx_type]


class _Graph:
    """Edits of the exported graph: new initializers and nodes."""

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self.initializers = {t.name: t for t in self.graph.initializer}

    def constant(self, name: str, array: np.ndarray,
                 onnx_type: Optional[int] = None) -> str:
        """An initializer: ``array`` as is, or its integers as ``onnx_type``
        (onnx packs the 4-bit types two per byte itself, from ml_dtypes'
        int4 / uint4 arrays)."""
        import ml_dtypes
        from onnx import TensorProto, numpy_helper
        if onnx_type is not None:
            dtype = {TensorProto.INT4: ml_dtypes.int4,
                     TensorProto.UINT4: ml_dtypes.uint4,
                     TensorProto.INT8: np.int8,
                     TensorProto.UINT8: np.uint8}[onnx_type]
            low, high = _type_range(onnx_type)
            if array.size and (array.min() < low or array.max() > high):
                raise ValueError(f'{name}: integers outside {low}..{high}')
            array = array.astype(np.int64).astype(dtype)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def insert_before(self, consumer, nodes) -> None:
        position = list(self.graph.node).index(consumer)
        for offset, node in enumerate(nodes):
            self.graph.node.insert(position + offset, node)

    def remove_initializer(self, name: str) -> None:
        self.graph.initializer.remove(self.initializers.pop(name))


def _quantize_weight(graph: _Graph, node, name: str, layer, opset: int
                     ) -> str:
    from onnx import helper
    grid = layer.weight_quantizer.grid
    reason = integer_grid_error(grid)
    if reason:
        raise ExportError(f'{name}: {reason}')
    codes = layer_weight_codes(layer).cpu().numpy().astype(np.int64)
    step = weight_step(layer).detach().cpu().numpy().astype(np.float32)
    per_channel = layer.weight_quantizer.channel_axis is not None
    step = step.reshape(-1) if per_channel else step.reshape(())
    onnx_type = _int_type(grid, opset)
    weight_name = node.input[1]
    q = graph.constant(f'{weight_name}_quantized', codes, onnx_type)
    scale = graph.constant(f'{weight_name}_scale', step)
    zero = graph.constant(f'{weight_name}_zero_point',
                          np.zeros(step.shape, np.int64), onnx_type)
    graph.remove_initializer(weight_name)
    attrs = dict(axis=0) if per_channel else {}
    graph.insert_before(node, [helper.make_node(
        'DequantizeLinear', [q, scale, zero], [weight_name],
        name=f'{name}/weight/DequantizeLinear', **attrs)])
    return helper.tensor_dtype_to_string(onnx_type).split('.')[-1]


def _quantize_input(graph: _Graph, node, name: str, layer) -> str:
    from onnx import helper
    quantizer = layer.input_quantizer
    grid = quantizer.grid
    if grid.kind == 'midrise':
        raise ExportError(f'{name}: the input grid is midrise, which has no '
                          'level at zero: quantize inputs on a signed or '
                          'unsigned grid')
    onnx_type = _int_type(grid, opset=0)
    step = np.float32(grid.step(float(quantizer.alpha)))
    low, high = code_range(grid)
    x = node.input[0]
    nodes = []
    if (low, high) != _type_range(onnx_type):
        lo = graph.constant(f'{name}.input_clip_min',
                            np.float32(low * step))
        hi = graph.constant(f'{name}.input_clip_max',
                            np.float32(high * step))
        nodes.append(helper.make_node('Clip', [x, lo, hi],
                                      [f'{name}.input_clipped'],
                                      name=f'{name}/input/Clip'))
        x = f'{name}.input_clipped'
    scale = graph.constant(f'{name}.input_scale', np.array(step))
    zero = graph.constant(f'{name}.input_zero_point',
                          np.zeros((), np.int64), onnx_type)
    nodes.append(helper.make_node('QuantizeLinear', [x, scale, zero],
                                  [f'{name}.input_quantized'],
                                  name=f'{name}/input/QuantizeLinear'))
    nodes.append(helper.make_node('DequantizeLinear',
                                  [f'{name}.input_quantized', scale, zero],
                                  [f'{name}.input_dequantized'],
                                  name=f'{name}/input/DequantizeLinear'))
    graph.insert_before(node, nodes)
    node.input[0] = f'{name}.input_dequantized'
    return helper.tensor_dtype_to_string(onnx_type).split('.')[-1]


def _bias_after(graph: _Graph, node, name: str) -> None:
    """Move the layer's float bias out of its Conv / Gemm into an Add.

    onnxruntime's WeightBiasQuantization rewrites the float bias of a
    DQ -> Conv (or Gemm) as int32 at the scale input x weight, which moves
    it off the value the PyTorch model adds (0.6% of the Fashion-MNIST W4A4
    predictions changed). An Add after the layer keeps it exact."""
    from onnx import helper, numpy_helper
    if len(node.input) < 3 or not node.input[2]:
        return
    bias = numpy_helper.to_array(graph.initializers[node.input[2]])
    if node.op_type == 'Conv':
        bias = bias.reshape(-1, 1, 1)
    added = graph.constant(f'{name}.bias_added', bias.astype(np.float32))
    graph.remove_initializer(node.input[2])
    del node.input[2]
    out = node.output[0]
    node.output[0] = f'{name}.output_without_bias'
    position = list(graph.graph.node).index(node) + 1
    graph.graph.node.insert(position, helper.make_node(
        'Add', [node.output[0], added], [out], name=f'{name}/bias/Add'))


def export_qdq(model: nn.Module, example: torch.Tensor, path: str,
               opset: int = DEFAULT_OPSET) -> dict:
    """Write ``model`` (quantized by mmlapq, or float) as ONNX to ``path``:
    input ``input`` (preprocessed NCHW float32, any batch size), output
    ``scores``. Returns what was written: per layer, the element types of
    its weight and input."""
    import onnx
    from onnx import version_converter
    if opset < 13:
        raise ExportError(f'opset {opset} is too old: per-channel '
                          'QuantizeLinear / DequantizeLinear need opset 13 '
                          '(INT4 weights need 21)')
    twin, layers = float_twin(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # the exporter's deprecation notes
        torch.onnx.export(_Logits(twin), (example, ), buffer, dynamo=False,
                          opset_version=_EXPORT_OPSET,
                          do_constant_folding=False, input_names=['input'],
                          output_names=['scores'],
                          dynamic_axes={'input': {0: 'batch'},
                                        'scores': {0: 'batch'}})
    onnx_model = onnx.load_from_string(buffer.getvalue())
    if opset != _EXPORT_OPSET:
        onnx_model = version_converter.convert_version(onnx_model, opset)
    graph = _Graph(onnx_model)
    consumers = {n.input[1]: n for n in graph.graph.node
                 if n.op_type in ('Conv', 'Gemm') and len(n.input) > 1}
    written = {}
    for name, layer in layers.items():
        node = consumers.get(f'{_PREFIX}{name}.weight')
        if node is None:
            raise ExportError(f'{name}: no Conv or Gemm node reads its '
                              'weight in the exported graph')
        row = dict(weight='FLOAT', input='FLOAT')
        if layer.weight_quantizer is not None:
            row['weight'] = _quantize_weight(graph, node, name, layer, opset)
        if layer.input_quantizer is not None:
            row['input'] = _quantize_input(graph, node, name, layer)
        _bias_after(graph, node, name)
        written[name] = row
    onnx.checker.check_model(onnx_model, full_check=True)
    atomic_write(path, lambda tmp: onnx.save(onnx_model, tmp))
    return dict(path=path, opset=opset, layers=written)
