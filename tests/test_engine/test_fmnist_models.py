"""The committed Fashion-MNIST models (the VGG-11-BN demo, and the
ResNet-18 and MobileNetV2 of issue 14): their LAPQ configs build the trained
model, and the checkpoints are small, plain, documented and give their known
top-1."""
import hashlib
import json
import os.path as osp
import re
import subprocess
import sys
import tempfile

import pytest
import torch
from mmengine.config import Config
from report_checks import (assert_guard_followed_its_rule,
                           reloaded_metrics)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# name -> (head inputs, top-1 of the float checkpoint on the first 1000
# test images, measured when it was committed, bound on the file's bytes:
# the brief's 20 MB for the demo, issue 14's 25 MB for the others)
MODELS = {
    'vgg11bn': (512, 94.40, 20 * 10**6),
    'resnet18': (512, 92.40, 25 * 10**6),
    'mobilenet-v2': (1280, 93.40, 25 * 10**6),
}


def paths(name: str):
    return (osp.join(REPO, 'configs', 'fmnist', f'{name}_fmnist.py'),
            osp.join(REPO, 'configs', 'lapq', f'{name}_fmnist_w4a4.py'),
            osp.join(REPO, 'checkpoints', f'{name}_fmnist.pth'))


@pytest.mark.parametrize('name', MODELS)
def test_lapq_config_quantizes_the_trained_model(name):
    train_config, lapq_config, checkpoint = paths(name)
    train, lapq = Config.fromfile(train_config), Config.fromfile(lapq_config)
    assert lapq.model.to_dict() == train.model.to_dict()
    assert lapq.test_pipeline == train.test_pipeline
    assert lapq.load_from == osp.relpath(checkpoint, REPO)
    assert lapq.quantizer.w_bits == 4 and lapq.quantizer.a_bits == 4


@pytest.mark.parametrize('name', MODELS)
def test_committed_checkpoint_is_small_plain_and_documented(name):
    checkpoint = paths(name)[2]
    assert osp.getsize(checkpoint) <= MODELS[name][2]
    ckpt = torch.load(checkpoint, weights_only=True)  # tensors only
    weight = ckpt['state_dict']['head.fc.weight']
    assert weight.shape == (10, MODELS[name][0])
    assert weight.dtype == torch.float16
    digest = hashlib.sha256(open(checkpoint, 'rb').read()).hexdigest()
    assert digest == documented_sha256(osp.relpath(checkpoint, REPO))


def documented_sha256(checkpoint: str) -> str:
    """The sha256 README gives next to the checkpoint's path (in the same
    sentence or table row)."""
    text = open(osp.join(REPO, 'README.md')).read()
    found = re.search(re.escape(checkpoint) + r'`?[^`]{0,120}`([0-9a-f]{64})`',
                      text)
    assert found, f'README gives no sha256 next to {checkpoint}'
    return found.group(1)


@pytest.mark.parametrize('name', MODELS)
def test_checkpoint_gives_its_known_top1(name, fmnist_data):
    """Loads strictly into the LAPQ config's model and scores the first
    1000 test images: a config that drifted from the trained model (another
    stem, stride or head) fails to load or loses accuracy."""
    from mmengine.registry import init_default_scope

    import mmlapq  # noqa: F401 - registers GrayToRGB
    from mmlapq.engine.evaluation import (build_eval_runner, evaluate,
                                          metrics_top)
    cfg = Config.fromfile(paths(name)[1])
    init_default_scope('mmcls')
    with tempfile.TemporaryDirectory() as work_dir:
        runner = build_eval_runner(cfg, work_dir, cfg.load_from,
                                   test_images=1000)
        top1 = metrics_top(evaluate(runner, 'fp32'))['top1']
    assert top1 == pytest.approx(MODELS[name][1], abs=0.05)


@pytest.mark.slow
def test_mobilenet_v2_main_job_on_a_slice(tmp_path, fmnist_data):
    """The depthwise model end to end on real weights: BN folded into the
    depthwise and pointwise convs, per-channel weight clips, the search, the
    integer checkpoint and its reload, with the config's QDrop rounding."""
    config, work_dir = paths('mobilenet-v2')[1], str(tmp_path / 'mnv2')
    slice_1000 = 'test_dataloader.dataset.indices=1000'
    proc = subprocess.run(
        [sys.executable, 'tools/quantize.py', config, '--work-dir', work_dir,
         '--calib-images', '256', '--max-evals', '60', '--cfg-options',
         slice_1000, 'quantizer.init.p_grid=[2.0,3.0,4.0]',
         'quantizer.calib.holdout_images=256',
         # 50 QDrop steps per block, not 500: the reconstruction runs, its
         # codes are saved and reloaded, in a tenth of the time
         'quantizer.rounding.adaround.iters=50'],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(osp.join(work_dir, 'lapq_report.json')))
    assert report['fp32']['top1'] == pytest.approx(MODELS['mobilenet-v2'][1],
                                                   abs=0.05)
    # 52 convs and the head; depthwise convs are quantized like the others.
    # (The integer target adds the pool's input and, for each of the 10
    # residual blocks, its input and its branch's end.)
    names = [layer['name'] for layer in report['layers']
             if layer['w_bits'] is not None]
    assert len(names) == 53 and 'backbone.layer7.0.conv.1.conv' in names
    assert len(report['layers']) == 53 + 1 + 2 * 10
    assert_guard_followed_its_rule(report['lapq'])
    # Measured with these settings: 93.40 -> 86.80 (60 evaluations are the
    # first 5% of a Powell sweep, so the model is about the per-channel Lp
    # init; the full run gains 2.7 points on it). The per-tensor Lp init
    # gives 36.30 here (the search's first 60 evaluations lift it to 88.30,
    # so the setting is checked directly, not through the top-1).
    assert report['settings']['quant']['w_per_channel'] is True
    assert report['quantized']['top1'] >= report['fp32']['top1'] - 8.0

    metrics = reloaded_metrics(REPO, config, work_dir,
                               str(tmp_path / 'reload'), [slice_1000])
    assert metrics['accuracy/top1'] == report['quantized']['top1']
