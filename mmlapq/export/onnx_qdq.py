"""ONNX export of a quantized model in the QDQ format that integer runtimes
fuse into integer kernels.

How: the quantized model's float twin is exported with torch's TorchScript
exporter. In the twin each quantized layer is a plain Conv2d / Linear that
holds its quantized weight and bias, and every input quantizer (of a layer,
a pool, a residual block or branch) is a pre-hook that the exporter writes
as ``QuantizeLinear -> [Clip] -> DequantizeLinear`` (:class:`_FakeQuantize`).
The initializers keep the parameters' names; then, per quantized layer,
found by its weight's name:

- the weight becomes an integer initializer of its codes, followed by a
  ``DequantizeLinear`` with the grid step as scale (per output channel with
  ``axis=0`` where the clips are) and zero point 0: INT8 by default, also
  for 4-bit and lower codes (the runtimes' integer kernels take 8-bit
  weights); ``weight_storage='int4'`` stores 4-bit codes as INT4 (opset
  21), half the size, but no runtime has a 4-bit conv kernel, so those
  layers then run as float convs;
- a bias on the integer grid (``target='integer'``, see
  ``QuantLayerMixin.bias_step``) becomes an INT32 initializer with a
  ``DequantizeLinear`` at input step x weight step: what onnxruntime's
  ``QLinearConv`` / ``QGemm`` add to their accumulator. A float bias
  (``target='fake_quant'``) moves into an ``Add`` after the layer, exact
  but not fusable.

Activations are UINT8 whatever their grid, as x86 integer kernels want
them: an unsigned grid with zero point 0, a signed grid with zero point 128
(its codes -q..q become 128-q..128+q). A grid narrower than the type (4
bits; the signed grid stops at -127) keeps its range as a ``Clip`` on the
UINT8 codes, which runs as an integer op between integer kernels.
onnxruntime moves each ``QuantizeLinear`` up through MaxPool / Flatten and
drops a ReLU before it (the zero point is the type's minimum), so a layer
whose output goes to another quantized layer becomes ``QLinearConv`` /
``QGemm`` with a UINT8 output.

The result computes what the fake-quantized PyTorch model computes, up to
float rounding of the accumulations and of the requantization. Grids that
QDQ cannot express exactly (the 'midrise' grid: no zero level) and
ReLU-output quantizers (``act_quant='relu_outputs'``) stop the export with
an :class:`ExportError` instead of writing another model.
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
from ..quant.conv_outputs import output_quantizer_module
from ..quant.grids import Grid
from ..quant.int_weights import (code_range, integer_grid_error,
                                 layer_weight_codes, weight_step)
from ..quant.qmodules import (QuantAct, QuantConv2d, QuantInputMixin,
                              unquantized_class)
from .batch_free import batch_free_reshapes

DEFAULT_OPSET = 17  # what torch's TorchScript exporter writes
INT4_OPSET = 21  # the first with INT4 / UINT4 Q and DQ
WEIGHT_STORAGES = ('int8', 'int4')
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


_UINT8 = 2  # onnx.TensorProto.UINT8

# UINT8 zero point of an activation grid: 0 for unsigned, the middle of the
# type for signed, so that x86's u8 x s8 kernels take every input.
_SIGNED_ZERO_POINT = 128


def activation_codes(grid: Grid) -> Tuple[int, int, int]:
    """(zero point, lowest, highest) UINT8 code of an activation grid."""
    low, high = code_range(grid)
    zero = _SIGNED_ZERO_POINT if grid.qmin < 0 else 0
    if grid.bits > 8:
        raise ExportError(f'{grid.bits}-bit activations have no 8-bit '
                          'integer type: use at most 8 bits')
    return zero, zero + low, zero + high


class _FakeQuantize(torch.autograd.Function):
    """The input quantizer's rounding in PyTorch; ``QuantizeLinear ->
    [Clip] -> DequantizeLinear`` on UINT8 in the exported graph."""

    @staticmethod
    def forward(ctx, x, grid, alpha, scale, zero, low, high):
        return grid.quantize(x, alpha)

    @staticmethod
    def symbolic(g, x, grid, alpha, scale, zero, low, high):
        def const(value, dtype):
            return g.op('Constant', value_t=torch.tensor(value, dtype=dtype))
        scale = const(scale, torch.float32)
        zero_point = const(zero, torch.uint8)
        q = g.op('QuantizeLinear', x, scale, zero_point)
        if (low, high) != (0, 255):
            q = g.op('Clip', q, const(low, torch.uint8),
                     const(high, torch.uint8))
        return g.op('DequantizeLinear', q, scale, zero_point)


class _InputQDQ:
    """An input quantizer as the exporter writes it (QDQ on UINT8)."""

    def __init__(self, quantizer):
        self.grid = quantizer.grid
        self.alpha = float(quantizer.alpha)
        self.zero, self.low, self.high = activation_codes(self.grid)
        self.scale = float(np.float32(self.grid.step(self.alpha)))

    def __call__(self, x):
        return _FakeQuantize.apply(x, self.grid, self.alpha, self.scale,
                                   self.zero, self.low, self.high)


def _quantize_input_on_export(module: nn.Module, quantizer) -> None:
    """Make ``module`` apply ``quantizer`` to its first input as QDQ."""
    qdq = _InputQDQ(quantizer)
    module.register_forward_pre_hook(
        lambda _, args: (qdq(args[0]), ) + tuple(args[1:]))


def _plain_module_with_qdq(module: QuantInputMixin) -> None:
    """Turn a module with a mixed-in input quantizer back into its own
    class, with the quantizer as a QDQ pre-hook (in place: its children
    stay where the other layers of the twin find them)."""
    quantizer = module.input_quantizer
    module.__class__ = unquantized_class(module)
    del module.input_quantizer
    _quantize_input_on_export(module, quantizer)


def _plain_layer(layer: nn.Module) -> nn.Module:
    """A float Conv2d / Linear with the layer's quantized weight and bias,
    behind the layer's input quantizer if it has one."""
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
    plain = plain.to(weight.device)
    if getattr(layer, 'same_padding', False):
        # Pad first, then the QDQ below, then Conv: the runtime fuses the
        # QDQ with the conv (zero padding commutes with the quantization).
        pad = layer.pad
        plain.register_forward_pre_hook(
            lambda _, args: (pad(args[0]), ) + tuple(args[1:]))
    quantizer = layer.input_quantizer
    if quantizer is not None:
        if quantizer.grid.kind == 'midrise':
            raise ExportError('the input grid is midrise, which has no level '
                              'at zero: quantize inputs on a signed or '
                              'unsigned grid')
        _quantize_input_on_export(plain, quantizer)
    output = output_quantizer_module(layer)
    if output is not None:  # QDQ after the conv: the runtime fuses them
        qdq = _InputQDQ(output.input_quantizer)
        plain.register_forward_hook(lambda _, __, y: qdq(y))
    return plain


def float_twin(model: nn.Module) -> Tuple[nn.Module, Dict[str, nn.Module]]:
    """A copy of ``model`` whose quantized layers are plain float layers
    behind their input quantizers, and the quantized layers by name."""
    if any(isinstance(m, QuantAct) for m in model.modules()):
        raise ExportError("ReLU-output quantizers (act_quant="
                          "'relu_outputs', preset='reference') are not "
                          'exported: quantize with act_quant='
                          "'layer_inputs' to export")
    twin = copy.deepcopy(model).eval()
    for name, layer in quant_layers(twin).items():
        if isinstance(layer, QuantInputMixin):
            _plain_module_with_qdq(layer)
            continue
        parent_name, _, child = name.rpartition('.')
        parent = twin.get_submodule(parent_name) if parent_name else twin
        try:
            setattr(parent, child, _plain_layer(layer))
        except ExportError as exc:
            raise ExportError(f'{name}: {exc}') from None
    return twin, quant_layers(model)


def _weight_type(grid: Grid, storage: str) -> int:
    """The ONNX element type of a weight grid's codes."""
    from onnx import TensorProto
    if grid.bits > 8:
        raise ExportError(f'{grid.bits}-bit weights have no ONNX integer '
                          'type: use at most 8 bits')
    if grid.bits <= 4 and storage == 'int4':
        return TensorProto.INT4
    return TensorProto.INT8


def _type_range(onnx_type: int) -> Tuple[int, int]:
    from onnx import TensorProto
    return {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15),
            TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255),
            TensorProto.INT32: (-2**31, 2**31 - 1)}[onnx_type]


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
                     TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8,
                     TensorProto.INT32: np.int32}[onnx_type]
            low, high = _type_range(onnx_type)
            if array.size and (array.min() < low or array.max() > high):
                raise ValueError(f'{name}: integers outside {low}..{high}')
            array = array.astype(np.int64).astype(dtype)
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.initializers[name] = tensor
        return name

    def readers(self) -> Dict[str, list]:
        """The nodes that read each value, in graph order."""
        readers: Dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        return readers

    def insert_before(self, consumer, nodes) -> None:
        position = list(self.graph.node).index(consumer)
        for offset, node in enumerate(nodes):
            self.graph.node.insert(position + offset, node)

    def remove_initializer(self, name: str) -> None:
        self.graph.initializer.remove(self.initializers.pop(name))

    def dequantized(self, node, index: int, name: str, codes: np.ndarray,
                    onnx_type: int, scale: np.ndarray,
                    axis: Optional[int]) -> None:
        """Replace input ``index`` of ``node`` (an initializer) by integer
        ``codes`` of ``onnx_type`` and a DequantizeLinear at ``scale``, one
        per index of ``axis`` (None: one scale)."""
        from onnx import helper
        value = node.input[index]
        q = self.constant(f'{value}_quantized', codes, onnx_type)
        zero = self.constant(f'{value}_zero_point',
                             np.zeros(scale.shape, np.int64), onnx_type)
        scale = self.constant(f'{value}_scale', scale.astype(np.float32))
        self.remove_initializer(value)
        attrs = {} if axis is None else dict(axis=axis)
        self.insert_before(node, [helper.make_node(
            'DequantizeLinear', [q, scale, zero], [value],
            name=f'{name}/DequantizeLinear', **attrs)])


def _quantize_weight(graph: _Graph, node, name: str, layer,
                     storage: str) -> str:
    from onnx import helper
    grid = layer.weight_quantizer.grid
    reason = integer_grid_error(grid)
    if reason:
        raise ExportError(f'{name}: {reason}')
    codes = layer_weight_codes(layer).cpu().numpy().astype(np.int64)
    step = weight_step(layer).detach().cpu().numpy().astype(np.float32)
    per_channel = layer.weight_quantizer.channel_axis is not None
    step = step.reshape(-1) if per_channel else step.reshape(())
    axis = 0 if per_channel else None
    if node.op_type == 'MatMul':  # x @ W^T: the output channel is axis 1
        codes = codes.T.copy()
        axis = 1 if per_channel else None
    onnx_type = _weight_type(grid, storage)
    graph.dequantized(node, 1, f'{name}/weight', codes, onnx_type, step,
                      axis)
    return helper.tensor_dtype_to_string(onnx_type).split('.')[-1]


def _quantize_bias(graph: _Graph, node, name: str, layer) -> str:
    """The bias as INT32 codes at input step x weight step, or a float Add
    after the layer where the bias is not on that grid."""
    from onnx import TensorProto
    if node.op_type == 'MatMul':
        # The exporter adds the bias after the MatMul: the twin's bias,
        # already on the integer grid, in a float Add.
        return 'none' if layer.bias is None else 'FLOAT'
    if len(node.input) < 3 or not node.input[2]:
        return 'none'
    step = layer.bias_step()
    if step is None:
        _bias_after(graph, node, name)
        return 'FLOAT'
    _, bias = layer.quantized_weight_and_bias()
    step = step.detach().cpu().float()
    codes = torch.round(bias.detach().cpu().float() / step).numpy()
    graph.dequantized(node, 2, f'{name}/bias', codes.astype(np.int64),
                      TensorProto.INT32, step.numpy(), 0)
    return 'INT32'


def _bias_after(graph: _Graph, node, name: str) -> None:
    """Move the layer's float bias out of its Conv / Gemm into an Add.

    onnxruntime's WeightBiasQuantization rewrites the float bias of a
    DQ -> Conv (or Gemm) as int32 at the scale input x weight, which moves
    it off the value the PyTorch model adds (0.6% of the Fashion-MNIST W4A4
    predictions changed). An Add after the layer keeps it exact."""
    from onnx import helper, numpy_helper
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


def _constants_to_initializers(graph: _Graph) -> None:
    """Constant nodes (the exporter's scales, zero points, clip bounds)
    as initializers, where the graph rewrites below look them up."""
    from onnx import numpy_helper
    for node in [n for n in graph.graph.node if n.op_type == 'Constant']:
        attr = {a.name: a for a in node.attribute}
        if 'value' not in attr:
            continue
        tensor = attr['value'].t
        array = numpy_helper.to_array(tensor)
        graph.graph.node.remove(node)
        graph.constant(node.output[0], array)


def _transposed_weights(graph: _Graph) -> None:
    """A Linear on a tensor of more than two dimensions exports as
    MatMul(x, Transpose(W)): store W transposed instead, so that the
    MatMul reads the weight initializer (then its DequantizeLinear), as a
    runtime's QDQ MatMul fusion wants it."""
    from onnx import numpy_helper
    readers = graph.readers()
    for node in list(graph.graph.node):
        weight = node.input[0] if node.op_type == 'Transpose' else None
        if weight not in graph.initializers or len(readers[weight]) != 1:
            continue
        perm = [a.ints for a in node.attribute if a.name == 'perm']
        after = readers.get(node.output[0], [])
        if not after or any(n.op_type != 'MatMul' for n in after) or \
                (perm and list(perm[0]) != [1, 0]):
            continue
        array = numpy_helper.to_array(graph.initializers[weight]).T.copy()
        graph.remove_initializer(weight)
        graph.constant(weight, array)
        graph.graph.node.remove(node)
        for reader in after:
            for i, value in enumerate(reader.input):
                if value == node.output[0]:
                    reader.input[i] = weight


def _undo_shared_initializers(graph: _Graph) -> None:
    """The exporter stores equal parameters once and reads the others
    through Identity nodes (equal biases of a random or zero-initialised
    model): each gets its own initializer again, so that every layer's
    weight and bias can be replaced by its own integer codes."""
    from onnx import numpy_helper
    for node in [n for n in graph.graph.node if n.op_type == 'Identity'
                 and n.input[0] in graph.initializers]:
        array = numpy_helper.to_array(graph.initializers[node.input[0]])
        graph.graph.node.remove(node)
        graph.constant(node.output[0], array)


def _value(graph: _Graph, name: str) -> Optional[np.ndarray]:
    from onnx import numpy_helper
    tensor = graph.initializers.get(name)
    return None if tensor is None else numpy_helper.to_array(tensor)


def _fold_bounded_relus(graph: _Graph) -> int:
    """Fold each float ``Clip(x, 0, c)`` (a ReLU6) that feeds only
    unsigned QuantizeLinears into their code ranges: Q(min(max(x, 0), c))
    has the codes of Q(x) clipped to 0..round(c / scale), because rounding
    is monotone and the zero point 0 is the type's minimum. onnxruntime
    drops such a Clip itself only when the quantizer's whole UINT8 range
    lies inside it, so a 4-bit grid would otherwise leave a float Clip
    between each conv and its QuantizeLinear, and the conv in float.
    Returns the number of Clips folded."""
    from onnx import helper
    nodes = list(graph.graph.node)
    consumers = graph.readers()
    folded = 0
    for clip in nodes:
        if clip.op_type != 'Clip' or len(clip.input) != 3:
            continue
        low, high = (_value(graph, n) for n in clip.input[1:])
        readers = consumers.get(clip.output[0], [])
        if low is None or high is None or low.dtype != np.float32 or \
                float(low) != 0.0 or not readers or any(
                    r.op_type != 'QuantizeLinear' or r.input[0] !=
                    clip.output[0] or _value(graph, r.input[2]) is None or
                    int(_value(graph, r.input[2])) != 0 for r in readers):
            continue
        for q in readers:
            scale = _value(graph, q.input[1]).astype(np.float32)
            top = int(np.rint(np.float32(high) / scale))
            q.input[0] = clip.input[0]
            after = consumers.get(q.output[0], [])
            code_clip = after[0] if len(after) == 1 and \
                after[0].op_type == 'Clip' else None
            if code_clip is not None:
                old = int(_value(graph, code_clip.input[2]))
                code_clip.input[2] = graph.constant(
                    f'{code_clip.output[0]}_bounded_max',
                    np.array(min(old, top)), _UINT8)
            elif top < 255:
                bounded = f'{q.output[0]}_bounded'
                for reader in consumers.get(q.output[0], []):
                    for i, name in enumerate(reader.input):
                        if name == q.output[0]:
                            reader.input[i] = bounded
                zero = graph.constant(f'{bounded}_min', np.array(0),
                                      _UINT8)
                top_name = graph.constant(f'{bounded}_max', np.array(top),
                                          _UINT8)
                position = list(graph.graph.node).index(q) + 1
                graph.graph.node.insert(position, helper.make_node(
                    'Clip', [q.output[0], zero, top_name], [bounded],
                    name=f'{q.name}/bounded'))
        graph.graph.node.remove(clip)
        folded += 1
    return folded


_LAYER_OPS = ('Conv', 'Gemm', 'MatMul')


def _copied_chain(chain: list, value: str, suffix: str) -> list:
    """Copies of the nodes ``chain`` (a ``Q -> [Clip] -> DQ``, each reading
    the previous one's output) that start from ``value``."""
    from onnx import helper
    copies = []
    for node in chain:
        copies.append(helper.make_node(
            node.op_type, [value] + list(node.input[1:]),
            [f'{node.output[0]}_{suffix}'], name=f'{node.name}/{suffix}'))
        value = copies[-1].output[0]
    return copies


def _qdq_chain_to(dq, producers: Dict[str, object]) -> Optional[list]:
    """``[Q, (Clip), DQ]`` when ``dq`` is a DequantizeLinear reading a
    QuantizeLinear, directly or through a Clip on its codes; else None."""
    if dq is None or dq.op_type != 'DequantizeLinear':
        return None
    chain = [dq]
    node = producers.get(dq.input[0])
    if node is not None and node.op_type == 'Clip':
        chain.insert(0, node)
        node = producers.get(node.input[0])
    if node is None or node.op_type != 'QuantizeLinear':
        return None
    return [node] + chain


def _round_again_before_adds(graph: _Graph) -> int:
    """Repeat the ``QuantizeLinear -> [Clip] -> DequantizeLinear`` of every
    add operand that a conv (or Gemm / MatMul) writes, between it and the
    ``Add``.

    Why: OpenVINO's CPU plugin fuses such a conv with its output quantizer,
    the residual add (a oneDNN sum) and the quantizer after the add, and
    then drops the rounding of the first quantizer ("drop rounding one
    special residual pattern" in its convolution node): it adds the
    unrounded branch, which changed about one code in eight after each
    residual block of ResNet-18 W4A4 and 1.6% of its predictions. The
    repeated pair is the identity on values already on the grid, so it
    changes nothing that PyTorch or onnxruntime computes (onnxruntime
    removes it: two equal QDQ pairs in a row), and OpenVINO rounds in the
    second one. Returns the number of pairs repeated."""
    producers = {o: n for n in graph.graph.node for o in n.output}
    repeated = 0
    for add in [n for n in graph.graph.node if n.op_type == 'Add']:
        for index, operand in enumerate(add.input):
            chain = _qdq_chain_to(producers.get(operand), producers)
            layer = None if chain is None else \
                producers.get(chain[0].input[0])
            if layer is None or layer.op_type not in _LAYER_OPS:
                continue
            copies = _copied_chain(chain, operand, 'rounded_again')
            graph.insert_before(add, copies)
            add.input[index] = copies[-1].output[0]
            repeated += 1
    return repeated


def _quantize_before_max_pools(graph: _Graph) -> int:
    """Quantize the input of each MaxPool whose output only a quantizer
    reads, with that quantizer: ``X -> MaxPool -> Q -> [Clip] -> DQ``
    becomes ``X -> Q -> [Clip] -> DQ -> MaxPool -> Q -> DQ``.

    Exact: quantization is non-decreasing, so it commutes with a maximum
    (and the pads of MaxPool are ignored, not zeros), and the pool of
    values on the grid is on the grid, so the Clip after it is the identity
    and the second pair too. Why: OpenVINO then fuses the quantizer into
    the conv before the pool and pools UINT8 codes (VGG-11-BN at batch 64:
    its f32 MaxPools and FakeQuantizes took 13.5 of 107 ms, now its UINT8
    pools 3.3 of 94 ms); onnxruntime moves the quantizer above MaxPool itself and runs
    the same graph as before. Returns the number of pools moved."""
    consumers = graph.readers()
    moved = 0
    for pool in [n for n in graph.graph.node if n.op_type == 'MaxPool']:
        # Shape readers (a neck's flatten) see the same shape either way.
        readers = [n for n in consumers.get(pool.output[0], [])
                   if n.op_type != 'Shape']
        if len(pool.output) != 1 or len(readers) != 1 or \
                readers[0].op_type != 'QuantizeLinear':
            continue
        chain = [readers[0]]
        after = consumers.get(chain[-1].output[0], [])
        if len(after) == 1 and after[0].op_type == 'Clip':
            chain.append(after[0])
            after = consumers.get(chain[-1].output[0], [])
        if len(after) != 1 or after[0].op_type != 'DequantizeLinear':
            continue
        chain.append(after[0])
        copies = _copied_chain(chain, pool.input[0], 'before_pool')
        graph.insert_before(pool, copies)
        pool.input[0] = copies[-1].output[0]
        if len(chain) == 3:  # Q -> Clip -> DQ after the pool: drop the Clip
            chain[2].input[0] = chain[0].output[0]
            graph.graph.node.remove(chain[1])
        moved += 1
    return moved


def _remove_unused_initializers(graph: _Graph) -> None:
    used = {name for node in graph.graph.node for name in node.input}
    for name in [n for n in graph.initializers if n not in used]:
        graph.remove_initializer(name)


def _input_type(layer) -> str:
    quantizer = layer.input_quantizer
    if quantizer is None:
        source = getattr(layer, 'input_grid_quantizer', lambda: None)()
        return 'FLOAT' if source is None else "UINT8 (its block's)"
    zero, low, high = activation_codes(quantizer.grid)
    return f'UINT8 (zero point {zero}, codes {low}..{high})'


def export_qdq(model: nn.Module, example: torch.Tensor, path: str,
               opset: Optional[int] = None,
               weight_storage: str = 'int8',
               dynamic_batch: bool = True) -> dict:
    """Write ``model`` (quantized by mmlapq, or float) as ONNX to ``path``:
    input ``input`` (preprocessed NCHW float32, any batch size, or the
    example's with ``dynamic_batch=False``), output ``scores``.
    ``weight_storage``: 'int8' (every weight in INT8, what
    integer kernels run; default) or 'int4' (codes of 4 bits and below as
    INT4, opset 21). ``opset``: default 17, 21 for INT4 storage. Returns
    what was written: per layer, the element types of its weight, bias and
    input."""
    import onnx
    from onnx import version_converter
    if weight_storage not in WEIGHT_STORAGES:
        raise ExportError(f'weight storage {weight_storage!r} is unknown: '
                          f'use one of {", ".join(WEIGHT_STORAGES)}')
    if opset is None:
        opset = INT4_OPSET if weight_storage == 'int4' else DEFAULT_OPSET
    if opset < 13:
        raise ExportError(f'opset {opset} is too old: per-channel '
                          'QuantizeLinear / DequantizeLinear need opset 13')
    if weight_storage == 'int4' and opset < INT4_OPSET:
        raise ExportError(f'INT4 weights need opset {INT4_OPSET}, not '
                          f'{opset}: pass --opset {INT4_OPSET} or store '
                          'weights as int8')
    twin, layers = float_twin(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), \
            batch_free_reshapes(twin):
        warnings.simplefilter('ignore')  # the exporter's deprecation notes
        torch.onnx.export(_Logits(twin), (example, ), buffer, dynamo=False,
                          opset_version=DEFAULT_OPSET,
                          do_constant_folding=False, input_names=['input'],
                          output_names=['scores'],
                          dynamic_axes={'input': {0: 'batch'},
                                        'scores': {0: 'batch'}}
                          if dynamic_batch else None)
    onnx_model = onnx.load_from_string(buffer.getvalue())
    if opset != DEFAULT_OPSET:
        onnx_model = version_converter.convert_version(onnx_model, opset)
    graph = _Graph(onnx_model)
    _undo_shared_initializers(graph)
    _transposed_weights(graph)
    consumers = {n.input[1]: n for n in graph.graph.node
                 if n.op_type in _LAYER_OPS
                 and len(n.input) > 1}
    written = {}
    for name, layer in layers.items():
        if isinstance(layer, QuantInputMixin):
            written[name] = dict(input=_input_type(layer))
            continue
        node = consumers.get(f'{_PREFIX}{name}.weight')
        if node is None:
            raise ExportError(f'{name}: no Conv, Gemm or MatMul node reads '
                              'its weight in the exported graph')
        row = dict(weight='FLOAT', input=_input_type(layer))
        if layer.weight_quantizer is not None:
            row['weight'] = _quantize_weight(graph, node, name, layer,
                                             weight_storage)
        row['bias'] = _quantize_bias(graph, node, name, layer)
        written[name] = row
    _constants_to_initializers(graph)
    _fold_bounded_relus(graph)
    _quantize_before_max_pools(graph)
    _round_again_before_adds(graph)
    _remove_unused_initializers(graph)
    onnx.checker.check_model(onnx_model, full_check=True)
    atomic_write(path, lambda tmp: onnx.save(onnx_model, tmp))
    return dict(path=path, opset=opset, weight_storage=weight_storage,
                dynamic_batch=dynamic_batch,
                layers=written)
