"""ONNX QDQ export: integer weight initializers, exact grids, the same
predictions in onnxruntime as the fake-quantized PyTorch model."""
import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS, init_default_scope
from onnx import TensorProto, numpy_helper
from conftest import skip_where_int8_pairs_saturate
from toy_runner import toy_config

import mmlapq  # noqa: F401
from mmlapq.engine.calibration import build_calibration_set
from mmlapq.export.onnxruntime import ort_session
from mmlapq.export import ExportError, export_qdq
from mmlapq.quant import Grid, QuantConv2d, QuantLinear
from mmlapq.quant.int_weights import layer_weight_codes
from mmlapq.registry import MODELS as LAPQ_MODELS


def quantized_toy(tmp_path, w_bits, a_bits, **quant):
    """The toy classifier quantized by LAPQQuantizer (Lp init, no
    search): first and last layer at 8 bits, the middle conv at w_bits."""
    cfg = toy_config(str(tmp_path))
    init_default_scope('mmcls')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    settings = dict(cfg.quantizer, w_bits=w_bits, a_bits=a_bits,
                    init=dict(p=2.0), search=dict(method='none'),
                    calib=dict(holdout_images=0), **quant)
    quantizer = LAPQ_MODELS.build(settings)
    calib, _ = build_calibration_set(cfg, model, 16, 0, 8)
    quantizer.quantize(model, calib)
    return model.to(memory_format=torch.contiguous_format)


def images(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g)


def run_both(model, path, x):
    with torch.no_grad():
        ref = model(x, mode='tensor').numpy()
    out = ort_session(path).run(None, {'input': x.numpy()})[0]
    return ref, out


def types(path):
    graph = onnx.load(path).graph
    return {t.name: t.data_type for t in graph.initializer}


def integer_kernels(path, tmp_path):
    from mmlapq.export.onnxruntime import optimized_ops
    return optimized_ops(path, str(tmp_path))


@pytest.mark.parametrize('w_bits, a_bits', [(8, 8), (4, 4), (2, 4)])
def test_same_predictions_in_onnxruntime(tmp_path, w_bits, a_bits):
    model = quantized_toy(tmp_path, w_bits, a_bits)
    path = str(tmp_path / 'toy.onnx')
    info = export_qdq(model, images(2), path)
    middle = 'backbone.layers.3'
    row = info['layers'][middle]
    assert row['weight'] == 'INT8' and row['bias'] == 'INT32'
    assert row['input'].startswith('UINT8')
    stored = types(path)
    assert stored[f'model.{middle}.weight_quantized'] == TensorProto.INT8
    assert stored[f'model.{middle}.bias_quantized'] == TensorProto.INT32
    assert not any(t == TensorProto.FLOAT and name.endswith(
        ('.weight', '.bias')) for name, t in stored.items())
    # Every quantized layer runs an integer kernel in onnxruntime.
    ops = integer_kernels(path, tmp_path)
    assert ops['float_layers'] == []
    assert ops['counts'].get('QLinearConv') == 2
    assert ops['counts'].get('QGemm') == 1
    skip_where_int8_pairs_saturate()
    ref, out = run_both(model, path, images())
    assert (ref.argmax(1) == out.argmax(1)).all()
    assert np.abs(out - ref).max() < 1e-4


def test_weights_and_biases_decode_to_the_layer_codes(tmp_path):
    model = quantized_toy(tmp_path, 4, 4)
    path = str(tmp_path / 'toy.onnx')
    export_qdq(model, images(2), path)
    graph = onnx.load(path).graph
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    layer = model.backbone.layers[3]
    codes = stored['model.backbone.layers.3.weight_quantized']
    assert np.array_equal(codes.astype(np.int64),
                          layer_weight_codes(layer).numpy())
    _, bias = layer.quantized_weight_and_bias()
    step = layer.bias_step()
    bias_codes = stored['model.backbone.layers.3.bias_quantized']
    np.testing.assert_array_equal(
        bias_codes.astype(np.float32) * step.numpy(), bias.numpy())
    np.testing.assert_array_equal(
        stored['model.backbone.layers.3.bias_scale'], step.numpy())


@pytest.mark.parametrize('w_bits, a_bits', [(8, 8), (4, 4)])
def test_int16_safe_weights_agree_on_every_cpu(tmp_path, w_bits, a_bits):
    """quantizer.int16_safe_weights: the layers with 8-bit weights and
    8-bit inputs take 7-bit weights, and onnxruntime computes what PyTorch
    computes on any CPU, one whose u8s8 kernels saturate int16 pair sums
    (x86 without VNNI) included: no skip here."""
    model = quantized_toy(tmp_path, w_bits, a_bits, int16_safe_weights=True)
    layers = {'backbone.layers.0': 7, 'backbone.layers.3':
              7 if w_bits == 8 else w_bits, 'head.fc': 7}
    for name, bits in layers.items():
        quantizer = model.get_submodule(name).weight_quantizer
        assert quantizer.bits == bits
        codes = layer_weight_codes(model.get_submodule(name))
        assert codes.abs().max() <= 2**(bits - 1) - 1
    path = str(tmp_path / 'toy.onnx')
    export_qdq(model, images(2), path)
    ref, out = run_both(model, path, images())
    assert (ref.argmax(1) == out.argmax(1)).all()
    assert np.abs(out - ref).max() < 1e-4


def test_int4_storage_halves_the_weights_at_opset_21(tmp_path):
    model = quantized_toy(tmp_path, 4, 4, w_per_channel=True)
    path = str(tmp_path / 'toy21.onnx')
    info = export_qdq(model, images(2), path, weight_storage='int4')
    assert info['opset'] == 21
    assert info['layers']['backbone.layers.3']['weight'] == 'INT4'
    dq = [n for n in onnx.load(path).graph.node
          if n.name == 'backbone.layers.3/weight/DequantizeLinear'][0]
    assert [a.i for a in dq.attribute if a.name == 'axis'] == [0]
    # The price: no runtime has a 4-bit conv kernel.
    assert integer_kernels(path, tmp_path)['float_layers']
    skip_where_int8_pairs_saturate()  # the 8-bit first and last layers
    ref, out = run_both(model, path, images())
    assert (ref.argmax(1) == out.argmax(1)).all()
    assert np.abs(out - ref).max() < 1e-4
    with pytest.raises(ExportError, match='INT4 weights need opset 21'):
        export_qdq(model, images(2), str(tmp_path / 'x.onnx'), opset=17,
                   weight_storage='int4')


class OneConv(nn.Module):
    def __init__(self, w_grid, a_grid):
        super().__init__()
        torch.manual_seed(0)
        self.conv = QuantConv2d.from_float(nn.Conv2d(2, 3, 1), w_grid,
                                           a_grid)

    def forward(self, x, mode='tensor'):
        return self.conv(x)


def test_a_narrow_signed_input_grid_is_clipped_not_saturated(tmp_path):
    """A 4-bit signed input grid stops at -7 steps; INT8 would go to -128:
    the export clips first, so inputs far below the grid still give -7."""
    model = OneConv(Grid(4, 'signed'), Grid(4, 'signed')).eval()
    model.conv.weight_quantizer.set_alpha(0.5)
    model.conv.input_quantizer.set_alpha(1.0)
    path = str(tmp_path / 'one.onnx')
    export_qdq(model, torch.zeros(1, 2, 2, 2), path)
    x = torch.tensor([-50.0, -1.3, -0.2, 0.0, 0.3, 0.9, 1.2, 50.0]).view(
        1, 2, 2, 2)
    ref, out = run_both(model, path, x)
    np.testing.assert_allclose(out, ref, atol=1e-6)


class Depthwise(nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = QuantConv2d.from_float(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            Grid(4, 'signed'), Grid(4, 'unsigned'), per_channel=True)

    def forward(self, x, mode='tensor'):
        return self.conv(x)


def test_int4_per_channel_depthwise_at_opset_21(tmp_path):
    """A depthwise conv, one clip per channel, 4-bit weights stored as INT4
    (27 values: an odd count, so onnx pads the last byte) with a
    per-axis DequantizeLinear: onnxruntime computes what PyTorch does."""
    model = Depthwise().eval()
    wq = model.conv.weight_quantizer
    wq.set_alpha(model.conv.weight.detach().abs().amax((1, 2, 3)) *
                 torch.tensor([0.5, 0.8, 1.0]))
    model.conv.input_quantizer.set_alpha(2.0)
    path = str(tmp_path / 'dw.onnx')
    info = export_qdq(model, torch.zeros(1, 3, 5, 5), path,
                      weight_storage='int4')
    assert info['layers']['conv']['weight'] == 'INT4'
    graph = onnx.load(path).graph
    stored = {t.name: t for t in graph.initializer}
    weight = stored['model.conv.weight_quantized']
    assert weight.data_type == TensorProto.INT4
    assert len(weight.raw_data) == 14  # 27 nibbles
    assert np.array_equal(numpy_helper.to_array(weight).astype(np.int64),
                          layer_weight_codes(model.conv).numpy())
    dq = [n for n in graph.node
          if n.name == 'conv/weight/DequantizeLinear'][0]
    assert [a.i for a in dq.attribute if a.name == 'axis'] == [0]
    x = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    ref, out = run_both(model, path, x * 3)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_grids_qdq_cannot_express_are_refused(tmp_path):
    model = OneConv(Grid(4, 'midrise'), Grid(4, 'unsigned')).eval()
    model.conv.weight_quantizer.set_alpha(0.5)
    model.conv.input_quantizer.set_alpha(1.0)
    with pytest.raises(ExportError, match="'midrise' weight grid has no "
                       'level at zero'):
        export_qdq(model, torch.zeros(1, 2, 2, 2), str(tmp_path / 'm.onnx'))
    assert not list(tmp_path.iterdir())  # nothing half-written
    model = quantized_toy(tmp_path, 4, 4, act_quant='relu_outputs')
    with pytest.raises(ExportError, match='ReLU-output quantizers'):
        export_qdq(model, images(2), str(tmp_path / 'r.onnx'))


class Relu6Pair(nn.Module):
    """conv -> ReLU6 -> conv, the second conv's input clip above 6."""

    def __init__(self, alpha: float):
        super().__init__()
        torch.manual_seed(0)
        self.first = QuantConv2d.from_float(nn.Conv2d(2, 4, 1), Grid(8),
                                            Grid(8, 'signed_full'),
                                            int_bias=True)
        self.act = nn.ReLU6()
        self.second = QuantConv2d.from_float(nn.Conv2d(4, 3, 1), Grid(4),
                                             Grid(4, 'unsigned'),
                                             int_bias=True)
        self.first.weight.data.mul_(20)  # outputs well beyond 6
        self.first.weight_quantizer.set_alpha(self.first.weight.abs().max())
        self.first.input_quantizer.set_alpha(2.0)
        self.second.weight_quantizer.set_alpha(0.5)
        self.second.input_quantizer.set_alpha(alpha)

    def forward(self, x, mode='tensor'):
        return self.second(self.act(self.first(x)))


@pytest.mark.parametrize('alpha, top', [(9.0, 10), (4.5, 15)])
def test_relu6_becomes_the_code_range_of_the_next_quantizer(
        tmp_path, alpha, top):
    """Q(min(max(x, 0), 6)) = min(Q(x), round(6 / step)): the float Clip of
    ReLU6 goes, the codes' Clip takes its bound, and onnxruntime runs the
    first conv on integers, computing what PyTorch computes."""
    model = Relu6Pair(alpha).eval()
    path = str(tmp_path / 'relu6.onnx')
    export_qdq(model, torch.zeros(1, 2, 3, 3), path)
    graph = onnx.load(path).graph
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    clips = [n for n in graph.node if n.op_type == 'Clip']
    bounds = [(stored[n.input[1]].dtype, int(stored[n.input[2]]))
              for n in clips]
    assert (np.dtype(np.uint8), top) in bounds
    assert all(dtype == np.uint8 for dtype, _ in bounds)  # no float Clip
    ops = integer_kernels(path, tmp_path)
    # The first conv, now followed by its Q, fuses; the second has a float
    # output (the graph's), which QLinearConv cannot give.
    assert ops['counts'].get('QLinearConv') == 1
    assert ops['float_layers'] == ['/model/second/Conv']
    x = torch.randn(16, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    ref, out = run_both(model, path, x)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


class TokenLinear(nn.Module):
    """A Linear on tokens (batch, tokens, channels), as in a transformer:
    the exporter writes MatMul(x, Transpose(W)) + Add(b)."""

    def __init__(self, per_channel: bool):
        super().__init__()
        torch.manual_seed(0)
        self.fc = QuantLinear.from_float(
            nn.Linear(6, 5), Grid(4), Grid(8, 'signed_full'),
            per_channel=per_channel, int_bias=True)
        self.fc.weight_quantizer.set_alpha(
            self.fc.weight.abs().amax(1) if per_channel
            else self.fc.weight.abs().max())
        self.fc.input_quantizer.set_alpha(2.0)

    def forward(self, x, mode='tensor'):
        return self.fc(x.flatten(2).transpose(1, 2)).mean(1)


@pytest.mark.parametrize('per_channel', [False, True])
def test_linear_on_tokens_exports_as_quantized_matmul(tmp_path, per_channel):
    """The MatMul reads the weight's INT8 codes through a DequantizeLinear
    (per output channel on axis 1) and onnxruntime computes what PyTorch
    computes."""
    model = TokenLinear(per_channel).eval()
    x = torch.randn(3, 6, 2, 2)
    path = str(tmp_path / 'tokens.onnx')
    info = export_qdq(model, x[:1], path)
    assert info['layers']['fc'] == dict(weight='INT8', input=info['layers'][
        'fc']['input'], bias='FLOAT')
    graph = onnx.load(path).graph
    matmul = [n for n in graph.node if n.op_type == 'MatMul']
    assert len(matmul) == 1 and not [n for n in graph.node
                                     if n.op_type == 'Transpose'
                                     and n.input[0].endswith('weight')]
    producer = {o: n for n in graph.node for o in n.output}
    dq = producer[matmul[0].input[1]]
    assert dq.op_type == 'DequantizeLinear'
    codes = numpy_helper.to_array(
        {i.name: i for i in graph.initializer}[dq.input[0]])
    assert codes.dtype == np.int8 and codes.shape == (6, 5)
    assert np.array_equal(codes.T, layer_weight_codes(model.fc).numpy())
    with torch.no_grad():
        expected = model(x).numpy()
    out = ort_session(path).run(None, {'input': x.numpy()})[0]
    assert np.abs(out - expected).max() < 1e-5
