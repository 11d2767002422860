"""The committed Fashion-MNIST models (the VGG-11-BN demo, the ResNet-18,
the MobileNetV2 and the DeiT-style ViT): their LAPQ configs build the
trained model, and the checkpoints are small, plain, documented and give
their known top-1."""
import glob
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
DEIT_TOP1 = 90.70
# name -> (head weight's key, its inputs, top-1 of the float checkpoint on
# the first 1000 test images, measured when it was committed, bound on the
# file's bytes: 20 MB for the demo, 25 MB for the others)
MODELS = {
    'vgg11bn': ('head.fc.weight', 512, 94.40, 20 * 10**6),
    'resnet18': ('head.fc.weight', 512, 92.40, 25 * 10**6),
    'mobilenet-v2': ('head.fc.weight', 1280, 93.40, 25 * 10**6),
    'deit-tiny-6l': ('head.layers.head.weight', 192, DEIT_TOP1, 25 * 10**6),
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
    head, inputs, _, max_bytes = MODELS[name]
    assert osp.getsize(checkpoint) <= max_bytes
    ckpt = torch.load(checkpoint, weights_only=True)  # tensors only
    weight = ckpt['state_dict'][head]
    assert weight.shape == (10, inputs)
    assert weight.dtype == torch.float16
    digest = hashlib.sha256(open(checkpoint, 'rb').read()).hexdigest()
    assert digest == documented_sha256(osp.relpath(checkpoint, REPO))


def documented_sha256(checkpoint: str) -> str:
    """The sha256 docs/default_model.md (the bundled models' page) gives
    next to the checkpoint's path (in the same sentence or table row)."""
    text = open(osp.join(REPO, 'docs', 'default_model.md')).read()
    found = re.search(re.escape(checkpoint) + r'`?[^`]{0,120}`([0-9a-f]{64})`',
                      text)
    assert found, f'docs/default_model.md gives no sha256 next to {checkpoint}'
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
    assert top1 == pytest.approx(MODELS[name][2], abs=0.05)


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
    assert report['fp32']['top1'] == pytest.approx(MODELS['mobilenet-v2'][2],
                                                   abs=0.05)
    # 52 convs and the head; depthwise convs are quantized like the others.
    # (The integer target adds the pool's input and, for each of the 10
    # residual blocks, its input and its branch's end.)
    names = [layer['name'] for layer in report['layers']
             if layer['w_bits'] is not None]
    assert len(names) == 53 and 'backbone.layer7.0.conv.1.conv' in names
    assert len(report['layers']) == 53 + 1 + 2 * 10
    # The chain cache: the stem, the 17 blocks (each a step), the last
    # conv, the pool and the head.
    log = open(glob.glob(osp.join(work_dir, '*', '*.log'))[0]).read()
    assert 'chain of 21 steps' in log
    assert report['lapq']['func_evals'] == 60
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


def trained_deit_and_images(num_images: int):
    """The bundled DeiT in float32 and its first test images, as the
    data preprocessor hands them to the model."""
    from mmlapq.engine.evaluation import build_eval_runner, unwrap
    cfg = Config.fromfile(paths('deit-tiny-6l')[1])
    with tempfile.TemporaryDirectory() as work_dir:
        runner = build_eval_runner(cfg, work_dir, cfg.load_from,
                                   test_images=num_images)
        model = unwrap(runner.model)
        images = []
        for batch in runner.test_dataloader:
            images.append(model.data_preprocessor(batch, False)['inputs'])
    return model, torch.cat(images)


def test_layernorm_reparameterization_is_exact_on_the_trained_deit(
        fmnist_data):
    """Folding each LayerNorm's per-channel ranges into its affine and the
    Linear layers that read it changes nothing in float: the logits of
    the trained model agree within 1e-5 of their largest value."""
    import copy

    from mmlapq.quant.layernorm import (LayerNormSettings,
                                        reparameterize_layernorms)
    model, x = trained_deit_and_images(500)
    reference = copy.deepcopy(model)
    calib, probe = x[:256], x[256:]
    with torch.no_grad():
        record = reparameterize_layernorms(
            model, lambda: [model(calib, mode='tensor')],
            LayerNormSettings())
        got, want = model(probe, mode='tensor'), reference(probe,
                                                           mode='tensor')
    # both LayerNorms of each of the 6 layers, their channels' ranges
    # uneven (up to 4x apart in the trained model), even afterwards
    assert len(record['layernorms']) == 12
    assert max(r['spread_before'] for r in record['layernorms']) > 3
    assert max(r['spread_after'] for r in record['layernorms']) < 1.01
    assert float((got - want).abs().max()) <= 1e-5 * float(
        want.abs().max())


def test_the_trained_deit_is_a_chain_of_its_layers(fmnist_data):
    """The chain cache's steps (embedding, 6 encoder layers, head) compose
    to the trained model's own forward."""
    from mmlapq.lapq.chain import build_chain, classifier_logits
    model, x = trained_deit_and_images(64)
    chain = build_chain(model, x[:8])  # falls back to one full forward
    assert [type(step).__name__ for step in chain] == [
        'ViTEmbedStep', *['TransformerEncoderLayer'] * 6, 'ViTHeadStep']
    with torch.no_grad():
        out = x
        for step in chain:
            out = step(out)
        want = classifier_logits(model, x)
    assert torch.allclose(out, want, rtol=0, atol=1e-5 * float(
        want.abs().max()))
