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
