"""Issue 20's graph test: the Fashion-MNIST VGG-11-BN, ResNet-18 and
MobileNetV2, quantized at W8A8 and W4A4 with the default (integer) target
and exported with no option, run every quantized conv and linear layer as
an integer kernel in onnxruntime (QLinearConv / QGemm, residual adds as
QLinearAdd, the pool as QLinearGlobalAveragePool), and predict what the
PyTorch model predicts; the bundled DeiT runs every Linear and both
attention products on integer kernels."""
import functools
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import skip_where_int8_pairs_saturate

import mmlapq  # noqa: F401
from mmlapq.engine.config import load_config
from mmlapq.engine.export import build_model, preprocessed_test_set
from mmlapq.export import export_qdq
from mmlapq.export.onnxruntime import optimized_ops, ort_runner
from mmlapq.lapq import CalibrationSet
from mmlapq.quant import quant_layers
from mmlapq.registry import MODELS as LAPQ_MODELS

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# name -> (convs, residual adds, convs that requantize a block's input at
# W4A4: each adding block's first conv, and ResNet's 3 downsample convs,
# take the block's 8-bit input (shortcut_bits) to their 4 bits through a
# float DequantizeLinear -> QuantizeLinear pair before their QLinearConv)
MODELS = {'vgg11bn': (8, 0, 0), 'resnet18': (20, 8, 11),
          'mobilenet-v2': (52, 10, 10)}


# A mixed-precision model (issue 29) as an allocation makes it: per-layer
# overrides, weights cycling through 2, 3, 4, 8 bits and inputs through 4
# and 8, so that every kind of layer meets every width and its neighbours
# differ.
MIXED = 'mixed'


def mixed_overrides(model) -> dict:
    from mmlapq.lapq.mixed import layer_macs
    names = list(layer_macs(model, torch.zeros(1, 3, 32, 32)))[1:-1]
    return {n: dict(w_bits=(2, 3, 4, 8)[i % 4], a_bits=(4, 8)[i // 4 % 2])
            for i, n in enumerate(names)}


@functools.lru_cache(maxsize=None)
def quantized(name: str, bits):
    """The committed model with the clips of the Lp init on 32 test images
    (no search: the graph does not depend on the clips' values; the test
    split, 10,000 images, loads much faster than the training split), and
    200 other test images with their labels. Made once per session (the
    runtime agreement test reads the same models): callers must not change
    the model."""
    cfg = load_config(osp.join(REPO, 'configs', 'lapq',
                               f'{name}_fmnist_w4a4.py'))
    model = build_model(cfg, osp.join(REPO, cfg.load_from))
    overrides = mixed_overrides(model) if bits == MIXED else {}
    bits = 4 if bits == MIXED else bits
    quantizer = LAPQ_MODELS.build(dict(
        cfg.quantizer, w_bits=bits, a_bits=bits, init=dict(p=2.0),
        overrides=overrides,
        search=dict(method='none'), rounding=dict(method='nearest'),
        calib=dict(holdout_images=0)))
    x, labels = preprocessed_test_set(cfg, model, 232, batch_size=232)[0]
    calib = CalibrationSet.from_tensors(torch.from_numpy(x[200:]),
                                        torch.from_numpy(labels[200:]), 32)
    plans, _ = quantizer.quantize(model, calib)
    model = model.to(memory_format=torch.contiguous_format).eval()
    _PLANS[id(model)] = plans
    return model, x[:200], labels[:200]


_PLANS = {}


def plans_of(model):
    """The layer plans the model of :func:`quantized` was wrapped with."""
    return _PLANS[id(model)]


def onnx_layer_widths(path: str) -> dict:
    """{layer: (weight bits, input bits)} as the ONNX graph computes them,
    read off the graph alone: each Conv / Gemm's input is the output of
    DequantizeLinear <- [Clip] <- QuantizeLinear, whose codes span
    (Clip's max - min + 1) levels, or the UINT8 type's 256; its weight is
    the dequantized integer initializer ``model.<layer>.weight_quantized``,
    whose codes span at most 2^bits levels."""
    import math
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(path).graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}

    def constant(name):
        if name in inits:
            return inits[name]
        return numpy_helper.to_array(producer[name].attribute[0].t)

    widths = {}
    for node in graph.node:
        if node.op_type not in ('Conv', 'Gemm'):
            continue
        weight = producer[node.input[1]].input[0]
        layer = weight[len('model.'):-len('.weight_quantized')]
        codes = inits[weight].astype(np.int64)
        w_levels = int(codes.max() - codes.min() + 1)
        dq = producer[node.input[0]]
        assert dq.op_type == 'DequantizeLinear', (layer, dq.op_type)
        before = producer[dq.input[0]]
        levels = 256
        if before.op_type == 'Clip':
            levels = int(constant(before.input[2]) -
                         constant(before.input[1]) + 1)
            before = producer[before.input[0]]
        assert before.op_type == 'QuantizeLinear', layer
        widths[layer] = (max(1, math.ceil(math.log2(w_levels))),
                         math.ceil(math.log2(levels)))
    return widths


@pytest.mark.parametrize('bits', [8, 4, MIXED])
@pytest.mark.parametrize('name', MODELS)
def test_every_quantized_layer_runs_an_integer_kernel(tmp_path, name, bits,
                                                      fmnist_data):
    if bits == MIXED and name == 'vgg11bn':
        pytest.skip('the residual models cover mixed widths')
    model, x, _ = quantized(name, bits)
    path = str(tmp_path / 'model.onnx')
    info = export_qdq(model, torch.from_numpy(x[:1]), path)
    weighted = [n for n, m in quant_layers(model).items()
                if m.weight_quantizer is not None]
    if bits == MIXED:
        assert {quant_layers(model)[n].weight_quantizer.bits
                for n in weighted} == {2, 3, 4, 8}
        # every layer's input in the graph is on a grid of its planned
        # width (its own quantizer's or its block's), its weight within
        # its planned width's levels
        planned = {p.name: (p.w_bits, p.a_bits) for p in plans_of(model)}
        in_graph = onnx_layer_widths(path)
        assert set(in_graph) == set(weighted)
        for layer in weighted:
            w_bits, a_bits = planned[layer]
            assert in_graph[layer][1] == a_bits, (layer, in_graph[layer])
            assert in_graph[layer][0] <= w_bits, (layer, in_graph[layer])
    assert all(info['layers'][n]['weight'] == 'INT8' and
               info['layers'][n]['bias'] == 'INT32' for n in weighted)
    ops = optimized_ops(path, str(tmp_path))
    assert ops['float_layers'] == []
    convs, adds, requantizing = MODELS[name]
    counts = ops['counts']
    assert counts.get('QLinearConv') == convs
    assert counts.get('QGemm') == 1
    assert counts.get('QLinearAdd', 0) == adds
    assert counts.get('QLinearGlobalAveragePool') == 1
    # No float op is left between the integer kernels but the input's
    # QuantizeLinear, those requantizations and layout changes (a float
    # ReLU6 would be a Clip with float bounds; the Clips left are on UINT8
    # codes).
    if bits == MIXED:
        # the convs whose input width differs from what feeds them
        # requantize (a float DequantizeLinear -> QuantizeLinear); nothing
        # else is float
        assert counts.get('DequantizeLinear', 0) == \
            counts.get('QuantizeLinear') - 1 > 0
    else:
        requantized = requantizing if bits < 8 else 0
        assert counts.get('DequantizeLinear', 0) == requantized
        assert counts.get('QuantizeLinear') == 1 + requantized
    skip_where_int8_pairs_saturate()
    with torch.no_grad():
        ref = model(torch.from_numpy(x), mode='tensor').numpy()
    out = ort_runner(path, threads=1)(x)
    agree = (ref.argmax(1) == out.argmax(1)).mean()
    assert agree >= 0.99, agree
    # Off by a requantization step at most, now and then.
    assert np.median(np.abs(out - ref)) < 1e-3 * np.abs(ref).max()


@pytest.mark.parametrize('bits', [8, 4])
def test_the_bundled_deit_runs_every_linear_and_product_on_integer_kernels(
        tmp_path, bits, fmnist_data):
    """The trained DeiT (6 layers): its 24 Linear layers, the head and the
    12 attention products and the patch embedding's conv (whose output the
    class token's concat reads: it has an output quantizer) are integer
    kernels in onnxruntime's optimized graph; no float MatMul, Gemm or
    Conv is left."""
    from test_attention_export import INTEGER_MATMULS, float_matmuls
    model, x, _ = quantized('deit-tiny-6l', bits)
    path = str(tmp_path / 'deit.onnx')
    export_qdq(model, torch.from_numpy(x[:1]), path)
    counts = optimized_ops(path, str(tmp_path))['counts']
    assert sum(counts.get(op, 0) for op in INTEGER_MATMULS) == \
        6 * 4 + 1 + 6 * 2
    assert float_matmuls(counts) == 0
    assert counts.get('Conv', 0) + counts.get('FusedConv', 0) + \
        counts.get('NchwcConv', 0) == 0
    assert counts.get('QLinearConv', 0) == 1
