"""mmcls's ResNet and MobileNetV2 under mmlapq: every BN folded (to 1e-5
of the unfolded model), depthwise convs quantized, per-channel if asked."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch.nn.modules.batchnorm import _BatchNorm

import mmlapq  # noqa: F401
from mmlapq.quant import QuantConv2d, QuantSettings, quantize_model
from mmlapq.quant.bn_fold import fold_batch_norms


def build(config):
    init_default_scope('mmcls')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(f'configs/lapq/{config}.py').model)
    # Non-trivial BN statistics, as a trained model has.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


@pytest.mark.parametrize('config', ['resnet18_w4a4', 'mobilenet-v2_w4a4'])
def test_every_bn_folds_and_the_output_stays(config):
    model = build(config)
    folded = copy.deepcopy(model)
    names = fold_batch_norms(folded)
    assert not [m for m in folded.modules() if isinstance(m, _BatchNorm)]
    assert len(names) == sum(isinstance(m, _BatchNorm)
                             for m in model.modules())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = model(x, mode='tensor')
        got = folded(x, mode='tensor')
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max())


def test_mobilenet_depthwise_convs_are_quantized_per_channel():
    model = build('mobilenet-v2_w4a4')
    plans = quantize_model(model, QuantSettings(w_bits=4, a_bits=4,
                                                w_per_channel=True))
    depthwise = [m for m in model.modules() if isinstance(m, QuantConv2d)
                 and m.groups == m.in_channels > 1]
    assert len(depthwise) == 17
    assert all(m.weight_quantizer.channel_axis == 0 for m in depthwise)
    # 52 convs + the FC head; the integer target adds the neck's pool and,
    # for each of the 10 residual blocks, its input and its branch's end.
    assert sum(p.type in ('Conv2d', 'Linear') for p in plans) == 53
    assert len(plans) == 53 + 1 + 2 * 10


def relu6_as_relu(model):
    from mmlapq.quant.equalize import replace_relu6
    replace_relu6(model, [n for n, m in model.named_modules()
                          if isinstance(m, torch.nn.ReLU6)])
    return model


@pytest.mark.parametrize('config, pairs', [('resnet18_w4a4', 8),
                                           ('mobilenet-v2_w4a4', 36)])
def test_equalization_keeps_the_output(config, pairs):
    """ResNet-18: conv1 -> conv2 of each BasicBlock (the shortcut add stops
    every other pair); MobileNetV2: expand -> depthwise -> project in every
    block, and project -> next expand where no shortcut reads it. Exact
    against the float model with ReLU for ReLU6."""
    from mmlapq.quant.equalize import equalize
    model = build(config)
    fold_batch_norms(model)
    reference = relu6_as_relu(copy.deepcopy(model))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    record = equalize(model, lambda: model(x, mode='tensor'))
    assert len(record['pairs']) == pairs
    with torch.no_grad():
        want = reference(x, mode='tensor')
        got = model(x, mode='tensor')
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max())


def quantize_and_reload(tmp_path, seed: int, **settings):
    """A random MobileNetV2 quantized (per-channel weights, Lp p=3, no
    search, no held-out images, plus ``settings``) on 8 random 32x32
    images, saved as a quantized checkpoint and reloaded into a fresh
    build: (model, images, LAPQ result, reloaded model)."""
    from mmlapq.engine.quantized_checkpoint import (
        load_quantized_checkpoint, save_quantized_checkpoint)
    from mmlapq.lapq import CalibrationSet
    from mmlapq.registry import MODELS as LAPQ_MODELS
    model = build('mobilenet-v2_w4a4')
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 3, 32, 32, generator=g)
    calib = CalibrationSet.from_tensors(x, torch.randint(0, 1000, (8, ),
                                                         generator=g), 4)
    quantizer = LAPQ_MODELS.build(dict(
        type='mmlapq.LAPQQuantizer', w_per_channel=True, init=dict(p=3.0),
        search=dict(method='none'), calib=dict(holdout_images=0),
        channels_last=False, **settings))
    plans, result = quantizer.quantize(model, calib)
    path = str(tmp_path / 'q.pth')
    save_quantized_checkpoint(model, quantizer, plans, path)
    reloaded = build('mobilenet-v2_w4a4')
    load_quantized_checkpoint(reloaded, path)
    return model, x, result, reloaded


def test_an_equalized_reconstructed_model_reloads(tmp_path):
    """The quantized checkpoint of an equalized MobileNetV2 whose rounding
    was learned rebuilds it exactly (the ReLU6 -> ReLU swaps redone)."""
    model, x, _, reloaded = quantize_and_reload(
        tmp_path, 3, equalize=True,
        rounding=dict(method='adaround', adaround=dict(iters=3)))
    assert any(m.weight_codes is not None for m in model.modules()
               if hasattr(m, 'weight_codes'))
    relu6 = [[n for n, m in net.named_modules()
              if isinstance(m, torch.nn.ReLU6)] for net in (model, reloaded)]
    assert relu6[0] == relu6[1] == ['backbone.conv2.activate']
    with torch.no_grad():
        assert torch.equal(reloaded(x, mode='tensor'),
                           model(x, mode='tensor'))


def test_learned_activation_steps_are_saved_and_reload_bit_for_bit(tmp_path):
    """MobileNetV2 whose activation steps were learned in the
    reconstruction (no search after it: every clip that moved, the steps
    moved): the quantized checkpoint holds the learned clips, and the
    reloaded model computes exactly what the run's model computes."""
    from mmlapq.quant.control import get_clips
    model, x, result, reloaded = quantize_and_reload(
        tmp_path, 4, rounding=dict(method='adaround', adaround=dict(
            iters=3, learn_act_steps=True, act_lr=0.05)))
    moved = [n for n, a in result.clips.items()
             if not torch.equal(a, result.init_clips[n])]
    assert moved and all(not n.endswith('.weight') for n in moved)
    clips = get_clips(reloaded)
    assert all(torch.equal(clips[n], result.clips[n]) for n in moved)
    with torch.no_grad():
        assert torch.equal(reloaded(x, mode='tensor'),
                           model(x, mode='tensor'))
