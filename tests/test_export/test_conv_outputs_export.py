"""Convs whose outputs a float op reads (ConvNeXt's stem and depthwise
convs into LayerNorms, its downsampling convs into residual adds) export
as integer kernels: with their output quantizers, onnxruntime runs every
conv as QLinearConv and the model computes what PyTorch computes; without
them (conv_output_bits=None, the scheme before) they stay float convs."""
import numpy as np
import pytest
import torch
from mmengine.registry import MODELS, init_default_scope
from test_attention_export import FLOAT_MATMULS

from mmlapq.export import export_qdq
from mmlapq.export.onnxruntime import optimized_ops, ort_runner
from mmlapq.lapq import (CalibrationObjective, CalibrationSet,
                         ClipInitializer, InitSettings)
from mmlapq.lapq.chain import build_chain
from mmlapq.quant import QuantSettings, quantize_model

FLOAT_CONVS = ('Conv', 'FusedConv', 'NchwcConv')


def convnext():
    """mmcls's ConvNeXt, two stages of one block: 4 convs (stem, two
    depthwise, one downsampling), each read by a LayerNorm or an add."""
    init_default_scope('mmcls')
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ConvNeXt', arch=dict(depths=[1, 1],
                                                 channels=[16, 32]),
                      out_indices=(1, )),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=32)))
    with torch.no_grad():
        model.head.fc.weight.normal_(0, 0.5)
    return model.eval()


def quantized(bits, conv_output_bits):
    model = convnext()
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    plans = quantize_model(model, QuantSettings(
        w_bits=bits, a_bits=bits, conv_output_bits=conv_output_bits),
        example=x[:2])
    calib = CalibrationSet([x[:8]], [torch.zeros(8).long()])
    objective = CalibrationObjective(build_chain(model, x[:8]), calib,
                                     model=model)
    ClipInitializer(objective, InitSettings(method='lp', p=2.0))()
    return model, x, plans


def exported(tmp_path, bits, conv_output_bits):
    model, x, plans = quantized(bits, conv_output_bits)
    path = str(tmp_path / 'convnext.onnx')
    export_qdq(model, x[:1], path)
    return model, x, plans, path, optimized_ops(path, str(tmp_path))['counts']


@pytest.mark.parametrize('bits', [8, 4])
def test_a_conv_feeding_a_layernorm_runs_as_qlinearconv(tmp_path, bits):
    model, x, plans, path, counts = exported(tmp_path, bits, 8)
    assert sum(p.type == 'ConvOutput' for p in plans) == 4
    assert counts.get('QLinearConv') == 4
    assert sum(counts.get(op, 0) for op in FLOAT_CONVS + FLOAT_MATMULS) == 0
    with torch.no_grad():
        ref = model(x[8:], mode='tensor').numpy()
    out = ort_runner(path, threads=1)(x[8:].numpy())
    assert (out.argmax(1) == ref.argmax(1)).all()
    assert np.abs(out - ref).max() <= 2e-2 * np.abs(ref).max()


def test_without_output_quantizers_the_convs_stay_float(tmp_path):
    _, _, plans, _, counts = exported(tmp_path, 8, None)
    assert not [p for p in plans if p.type == 'ConvOutput']
    assert counts.get('QLinearConv', 0) == 0
    assert sum(counts.get(op, 0) for op in FLOAT_CONVS) == 4
