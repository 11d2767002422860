"""OpenVINO (export/openvino.py): its CPU plugin runs our QDQ file on its
int8 kernels and computes what PyTorch computes."""
import numpy as np
import pytest
from conftest import skip_where_int8_pairs_saturate
from test_onnx_qdq import images, quantized_toy, run_both

from mmlapq.export import export_qdq
from mmlapq.export.openvino import (openvino_available, openvino_int8_layers,
                                    openvino_runner)


@pytest.mark.skipif(not openvino_available(), reason='openvino is not '
                    'installed (tools/setup.sh installs it)')
@pytest.mark.parametrize('bits', [8, 4])
def test_openvino_runs_our_file_on_int8_kernels(tmp_path, bits):
    model = quantized_toy(tmp_path, bits, bits)
    path = str(tmp_path / 'toy.onnx')
    export_qdq(model, images(2), path)
    kernels = openvino_int8_layers(path, threads=1)
    assert kernels == {'Convolution:u8': 2, 'FullyConnected:u8': 1}
    skip_where_int8_pairs_saturate()
    ref, _ = run_both(model, path, images())
    out = openvino_runner(path, threads=1)(images().numpy())
    assert (ref.argmax(1) == out.argmax(1)).all()
    assert np.abs(out - ref).max() < 1e-4


def tiny_vit():
    """mmcls's VisionTransformer, one layer: a patch conv (bias on) whose
    output quantizer the class-token concat reads."""
    import torch
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmcls')
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', img_size=32, patch_size=8,
                      arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                                feedforward_channels=64)),
        head=dict(type='VisionTransformerClsHead', num_classes=10,
                  in_channels=32))).eval()


@pytest.mark.skipif(not openvino_available(), reason='openvino is not '
                    'installed (tools/setup.sh installs it)')
def test_openvino_computes_a_patch_conv_with_its_output_quantizer(tmp_path):
    """With a dynamic batch, OpenVINO 2026.4 gave every channel of such a
    conv the bias of its first one (DeiT W8A8 agreed with PyTorch on 72%
    of the images); the runner compiles each batch shape statically."""
    import torch

    from mmlapq.export.onnxruntime import ort_runner
    from mmlapq.lapq import (CalibrationObjective, CalibrationSet,
                             ClipInitializer, InitSettings)
    from mmlapq.lapq.chain import build_chain
    from mmlapq.quant import QuantSettings, quantize_model
    model = tiny_vit()
    with torch.no_grad():
        model.backbone.patch_embed.projection.bias.uniform_(-1, 1)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    settings = QuantSettings(w_bits=8, a_bits=8, conv_output_bits=8)
    plans = quantize_model(model, settings, example=x[:2])
    assert [p.name for p in plans if p.type == 'ConvOutput'] == \
        ['backbone.patch_embed.projection.output']
    objective = CalibrationObjective(
        build_chain(model, x[:8]),
        CalibrationSet([x[:8]], [torch.zeros(8).long()]), model=model)
    ClipInitializer(objective, InitSettings(method='lp', p=2.0))()
    path = str(tmp_path / 'vit.onnx')
    export_qdq(model, x[:1], path)
    reference = ort_runner(path, threads=1)(x[8:].numpy())
    run = openvino_runner(path, threads=1)
    for batch in (x[8:], x[8:11]):  # two shapes, one compile each
        out = run(batch.numpy())
        assert np.abs(out - reference[:len(out)]).max() <= \
            1e-3 * np.abs(reference).max()
