"""Backbones of the mmcls zoo (tests/zoo.py): the wrapped model computes
the float model when no clip is applied, and a user's config for each
(stock config + our base) quantizes end to end, reloads and exports to
ONNX."""
import json
import os.path as osp

import pytest
import torch
from imagenet_fixture import label_val_by_model, make_imagenet_folder
from inprocess import printed_top1, quantize_tool
from zoo import SIZE, ZOO, build_zoo_model, first_moved_conv_outputs, \
    save_zoo_checkpoint, write_user_config

from mmlapq.quant import QuantSettings, quantization_disabled, quantize_model

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LAPQ_BASE = osp.join(REPO, 'configs', '_base_', 'lapq_w4a4.py')


def _logits(model, x):
    out = model(x, mode='tensor')
    return out[-1] if isinstance(out, (tuple, list)) else out


@pytest.mark.parametrize('name', sorted(ZOO))
def test_wrapped_model_without_clips_is_the_float_model(name):
    """Every Conv2d / Linear of the backbone is wrapped (BN folded) and,
    with quantization off, the logits are the float model's: TF 'same'
    padding (EfficientNet), grouped and depthwise convs, SE blocks, layer
    scale and attention included."""
    model = build_zoo_model(name)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator()
                    .manual_seed(0))
    with torch.no_grad():
        ref = _logits(model, x)
        plans = quantize_model(model, QuantSettings())
        with quantization_disabled(model):
            out = _logits(model, x)
    assert len([p for p in plans if p.w_bits]) > 10
    # Folding BN reorders float sums: relative to the logits' scale.
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) <= 1e-4 * scale, name


# A short run: 4 calibration images, p fixed, nearest rounding (GPTQ takes
# minutes on the ResNet-50s at any input size; it is tested elsewhere), six
# loss evaluations of the search.
SHORT = ['quantizer.init.p=2.0', 'quantizer.rounding.method=nearest',
         'quantizer.calib.holdout_images=0', 'quantizer.calib.batch_size=4']


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(ZOO))
def test_user_config_quantizes_reloads_and_exports(name, tmp_path, capsys):
    root = make_imagenet_folder(str(tmp_path / 'data'), num_train=8,
                                num_val=6)
    config = write_user_config(str(tmp_path / f'{name}.py'), name, root,
                               LAPQ_BASE)
    ckpt = save_zoo_checkpoint(name, str(tmp_path / 'float.pth'))
    label_val_by_model(root, ckpt, config)  # the float model's top-1
    tool = quantize_tool()
    work_dir = str(tmp_path / 'run')
    assert tool.main([config, '--checkpoint', ckpt, '--work-dir', work_dir,
                      '--calib-images', '4', '--max-evals', '6',
                      '--cfg-options', f'experiment_name={name}_q',
                      *SHORT]) == 0
    report = json.load(open(osp.join(work_dir, 'lapq_report.json')))
    quantized = [row for row in report['layers'] if row['w_bits']]
    assert len(quantized) > 10
    # The labels are the float model's top-1 in a batch of 6; a random
    # DeiT scores every image nearly alike, and a batch of 4 may flip a tie.
    assert report['fp32']['top5'] == 100.0
    qckpt = osp.join(work_dir, 'lapq_quantized.pth')
    capsys.readouterr()
    assert tool.main([config, '--eval-quantized', qckpt, '--work-dir',
                      str(tmp_path / 'reload'), '--cfg-options',
                      f'experiment_name={name}_r']) == 0
    assert printed_top1(capsys.readouterr().out) == \
        report['quantized']['top1']
    from mmlapq.engine.config import load_config
    from mmlapq.engine.export import (build_model, compare_with_onnxruntime,
                                      compare_with_runtime, export_onnx,
                                      preprocessed_test_set)
    cfg = load_config(config)
    onnx_path = str(tmp_path / 'model.onnx')
    info = export_onnx(cfg, qckpt, onnx_path)
    # any batch size, Swin's window reverse too (export/batch_free.py)
    assert info['dynamic_batch'], name
    check = compare_with_onnxruntime(cfg, qckpt, onnx_path)
    if check['agreement'] < 100.0:
        # Each image whose top-1 differs must owe it to one conv-output
        # code at a rounding tie (one step, within float error of half a
        # step), the first code that moved in it: random 4-bit weights
        # amplify that. Measured 2026-12-06: RepVGG-A0 and Swin-T, 5 of 6
        # images each. A code moved by an export bug is not at a tie.
        model = build_model(cfg, qckpt)
        images, _ = preprocessed_test_set(cfg, model, 6, 6)[0]
        moved = first_moved_conv_outputs(model, onnx_path, images)
        assert moved and all(
            m is not None and m['max_steps'] == 1.0 and
            m['max_tie_distance'] < 1e-3 for m in moved.values()), \
            (check, moved)
    if name in ('convnext-t', 'swin-t'):
        check = compare_with_runtime(cfg, qckpt, onnx_path,
                                     runtime='openvino')
        if name == 'swin-t' and check['agreement'] < 100.0:
            # OpenVINO 2026.4.1's float kernels (LayerNorm, MatMul,
            # softmax) differ from PyTorch's by a float32 ulp or two and
            # move codes at ties through the 24 blocks (tools/export.py
            # --divergence, docs/zoo.md): 3 of 6 images agreed with the
            # dynamic-batch compile, 6 of 6 with the static one
            # (2026-12-06); another machine may round otherwise.
            pytest.xfail(f'OpenVINO computes other numbers than PyTorch on '
                         f'this Swin: {check}')
        assert check['agreement'] == 100.0, check
