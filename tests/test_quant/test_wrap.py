import copy

import pytest
import torch
import torch.nn as nn
from toy import toy_chain

from mmlapq.quant import (Grid, QuantConv2d, QuantLinear, QuantSettings,
                          empirical_bias_correction, fold_batch_norms,
                          get_clips, lp_clip_tensor, plan_layers,
                          quant_layers, quantization_disabled, quantize_model,
                          quantizers, set_clips)


def mmcls_vgg(depth=11, bn=True):
    """mmcls's VGG with the Fashion-MNIST head (small: no 4096-wide FCs)."""
    from mmcls.models import build_classifier
    from mmcls.utils import register_all_modules
    register_all_modules()
    cfg = dict(type='ImageClassifier',
               backbone=dict(type='VGG', depth=depth, num_classes=-1,
                             norm_cfg=dict(type='BN') if bn else None),
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead', num_classes=10,
                         in_channels=512))
    torch.manual_seed(0)
    model = build_classifier(cfg).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def logits(model, x):
    return model(x, mode='tensor')


def test_bn_folding_keeps_outputs_plain_and_mmcv():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    plain = toy_chain().eval()
    plain[1].running_mean.uniform_(-1, 1)
    plain[1].running_var.uniform_(0.5, 2)
    ref = plain(x)
    assert fold_batch_norms(plain) == ['1']
    assert isinstance(plain[1], nn.Identity)
    torch.testing.assert_close(plain(x), ref, rtol=1e-5, atol=1e-5)

    vgg = mmcls_vgg()
    x = torch.randn(2, 3, 32, 32)
    ref = logits(vgg, x)
    folded = fold_batch_norms(vgg)
    assert len(folded) == 8  # the eight convs of VGG-11
    assert not any(isinstance(m, nn.BatchNorm2d) for m in vgg.modules())
    torch.testing.assert_close(logits(vgg, x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('norm', [nn.BatchNorm2d, nn.SyncBatchNorm])
def test_every_batchnorm_after_a_conv_in_a_sequential_is_folded(norm):
    """mmcls's multi-GPU configs build ResNet's downsample with SyncBN."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), norm(8)).eval()
    block[1].running_mean.uniform_(-1, 1)
    block[1].running_var.uniform_(0.5, 2)
    block[1].weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 5, 5)
    ref = nn.functional.batch_norm(
        block[0](x), block[1].running_mean, block[1].running_var,
        block[1].weight, block[1].bias, eps=block[1].eps)
    assert fold_batch_norms(block) == ['1']
    assert isinstance(block[1], nn.Identity)
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('bn', [True, False])
def test_float_mmcls_state_dict_loads_into_wrapped_model(bn):
    vgg = mmcls_vgg(bn=bn)
    state = copy.deepcopy(vgg.state_dict())
    quantize_model(vgg, QuantSettings(fold_bn=False))
    missing, unexpected = vgg.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    assert set(vgg.state_dict()) == set(state)
    # 8 convs, the head's fc and the neck's pool (the integer target
    # quantizes its input; its class changes, its state does not).
    assert len(quant_layers(vgg)) == 10


def test_quantization_off_is_bit_identical():
    vgg = mmcls_vgg()
    x = torch.randn(2, 3, 32, 32)
    ref = logits(vgg, x)
    quantize_model(vgg, QuantSettings(fold_bn=False))
    for q in quantizers(vgg).values():
        q.set_alpha(0.5)
    with quantization_disabled(vgg):
        assert torch.equal(logits(vgg, x), ref)
    assert not torch.equal(logits(vgg, x), ref)  # and on again afterwards


def test_layer_plan_policies_and_overrides():
    vgg = mmcls_vgg()
    names = [p.name for p in plan_layers(vgg, QuantSettings())
             if p.type in ('Conv2d', 'Linear')]
    first, last = names[0], names[-1]
    assert first == 'backbone.features.0.conv' and last == 'head.fc'

    plans = {p.name: p for p in plan_layers(vgg, QuantSettings())}
    assert (plans[first].w_bits, plans[first].a_bits) == (8, 8)
    assert (plans[last].w_bits, plans[last].a_bits) == (8, 8)
    assert (plans[names[3]].w_bits, plans[names[3]].a_bits) == (4, 4)

    plans = plan_layers(vgg, QuantSettings(first_last='fp'))
    # No pool plan: nothing quantized reads the pool's output.
    assert [p.name for p in plans] == names[1:-1]
    plans = plan_layers(vgg, QuantSettings(first_last='same', w_bits=3))
    assert all(p.w_bits == 3 and p.a_bits == 4 for p in plans
               if p.type != 'AdaptiveAvgPool2d')

    settings = QuantSettings(overrides={
        'backbone.features.2.*': dict(w_bits=6),
        'backbone.features.4.conv': dict(a_bits='fp'),
        'head.fc': 'fp'})
    plans = {p.name: p for p in plan_layers(vgg, settings)}
    assert plans['backbone.features.2.conv'].w_bits == 6
    assert plans['backbone.features.4.conv'].a_bits is None
    assert 'head.fc' not in plans

    plans = plan_layers(vgg, QuantSettings(layer_types=['Linear']))
    assert [p.name for p in plans] == ['neck.gap', 'head.fc']
    plans = plan_layers(vgg, QuantSettings(layer_types=['Linear'],
                                           target='fake_quant'))
    assert [p.name for p in plans] == ['head.fc']


def test_reference_preset_quantizes_what_the_reference_does():
    """Reference (lapq/layer_scale_optimization_opt.py): the weights of
    Conv2d [1:-1] and the outputs of ReLU [1:-1], Linear in FP, no BN
    folding."""
    vgg = mmcls_vgg()  # VGG-11-BN: 8 ConvModules (conv, bn, ReLU)
    float_state = copy.deepcopy(vgg.state_dict())
    quantize_model(vgg, QuantSettings(preset='reference', w_bits=4,
                                      a_bits=3))
    inner = (2, 4, 5, 7, 8, 10)  # ConvModules 0..11, max pools between
    convs = [f'backbone.features.{i}.conv.weight' for i in inner]
    relus = [f'backbone.features.{i}.activate.output' for i in inner]
    assert list(quantizers(vgg)) == [n for pair in zip(convs, relus)
                                     for n in pair]
    assert all(q.bits == (4 if n.endswith('weight') else 3)
               for n, q in quantizers(vgg).items())
    assert isinstance(vgg.backbone.features[0].bn, nn.BatchNorm2d)
    assert type(vgg.head.fc) is nn.Linear  # Linear stays float
    assert set(vgg.state_dict()) == set(float_state)  # loads the same keys


def test_reference_preset_on_a_toy_chain_quantizes_relu_outputs():
    model = toy_chain()
    x = torch.randn(2, 3, 8, 8)
    quantize_model(model, QuantSettings(preset='reference', a_bits=2))
    assert list(quantizers(model)) == ['3.weight', '4.output', '6.weight',
                                       '7.output']
    set_clips(model, {'3.weight': torch.tensor(0.1),
                      '4.output': torch.tensor(0.5),
                      '6.weight': torch.tensor(0.1),
                      '7.output': torch.tensor(0.5)})
    with torch.no_grad():
        out = model[:5](x)
    # A 2-bit unsigned grid of clip 0.5: levels 0, 1/6, 2/6, 3/6.
    levels = torch.tensor([0, 1 / 6, 2 / 6, 3 / 6])
    assert bool((out[..., None] - levels).abs().min(-1).values.max() < 1e-6)


@pytest.mark.parametrize('kwargs,match', [
    (dict(w_bits=1), 'w_bits=1 is not supported'),
    (dict(a_bits=17), 'a_bits=17 is not supported'),
    (dict(overrides={'head.fc': dict(w_bits=40)}), 'w_bits of override'),
    (dict(first_last='int8'), 'first_last'),
    (dict(w_grid='asym'), 'w_grid'),
    (dict(layer_types=['Conv3d']), 'layer_types'),
    (dict(preset='nncf'), 'preset'),
])
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantSettings(**kwargs)


def test_unknown_pattern_and_empty_selection_are_clear_errors():
    vgg = mmcls_vgg()
    with pytest.raises(ValueError, match="pattern 'backbone.stem.*' matches"):
        plan_layers(vgg, QuantSettings(include=['backbone.stem.*']))
    with pytest.raises(ValueError, match="pattern 'neck.fc' matches no"):
        plan_layers(vgg, QuantSettings(overrides={'neck.fc': 'fp'}))
    with pytest.raises(ValueError, match='no layer is selected'):
        plan_layers(vgg, QuantSettings(exclude=['*']))


def test_weight_is_quantized_once_per_clip_change():
    conv = QuantConv2d.from_float(nn.Conv2d(3, 4, 3), Grid(4), Grid(4))
    conv.weight_quantizer.set_alpha(0.2)
    conv.input_quantizer.set_alpha(1.0)
    calls = []
    original = conv.weight_quantizer.forward
    conv.weight_quantizer.forward = lambda w: calls.append(1) or original(w)
    x = torch.randn(1, 3, 8, 8)
    for _ in range(3):
        conv(x)
    assert len(calls) == 1
    conv.weight_quantizer.set_alpha(0.3)
    conv(x)
    assert len(calls) == 2
    with torch.no_grad():
        conv.weight.mul_(2)  # a changed weight is seen too
    conv(x)
    assert len(calls) == 3


def test_clip_vector_round_trip_and_per_channel():
    vgg = mmcls_vgg()
    quantize_model(vgg, QuantSettings(w_per_channel=True))
    clips = {}
    for name, q in quantizers(vgg).items():
        shape = q.alpha.shape if q.channel_axis is None else (
            vgg.get_submodule(name.rsplit('.', 1)[0]).weight.shape[0], )
        clips[name] = torch.rand(shape) + 0.1
    set_clips(vgg, clips)
    got = get_clips(vgg)
    assert list(got) == list(clips)
    assert all(torch.equal(got[n], clips[n]) for n in clips)
    assert got['backbone.features.2.conv.weight'].shape == (128, )
    with pytest.raises(KeyError, match='unknown quantizer'):
        set_clips(vgg, {'backbone.nope.weight': torch.tensor(1.0)})


def test_weight_mean_correction_keeps_channel_means():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(64, 8), Grid(3), None,
                                   weight_mean_correction=True)
    layer.weight_quantizer.set_alpha(float(lp_clip_tensor(layer.weight,
                                                          Grid(3), 2.0)))
    w_hat, _ = layer.quantized_weight_and_bias()
    torch.testing.assert_close(w_hat.mean(1), layer.weight.detach().mean(1),
                               rtol=0, atol=1e-6)


def test_empirical_bias_correction_matches_output_means():
    torch.manual_seed(0)
    conv = QuantConv2d.from_float(nn.Conv2d(8, 6, 3, bias=False), Grid(2),
                                  Grid(4, 'signed'))
    conv.weight_quantizer.set_alpha(0.05)
    conv.input_quantizer.set_alpha(3.0)
    x = torch.randn(32, 8, 10, 10) + 0.5  # non-zero mean input
    model = nn.Sequential(conv)
    shifts = empirical_bias_correction(model, lambda: model(x))
    assert set(shifts) == {'0'} and shifts['0'].shape == (6, )
    xq = conv.input_quantizer(x)
    float_weight_out = nn.functional.conv2d(xq, conv.weight)
    torch.testing.assert_close(model(x).mean((0, 2, 3)),
                               float_weight_out.mean((0, 2, 3)), rtol=0,
                               atol=1e-5)


@pytest.mark.parametrize('size', [9, 10, 15, 16])
def test_same_padding_conv_keeps_its_padding(size):
    """mmcv's Conv2dAdaptivePadding pads by the input size (EfficientNet);
    its quantized twin computes the same outputs (odd sizes pad one more
    on the right and bottom), quantized or not, and exports the padding."""
    from mmcv.cnn.bricks import Conv2dAdaptivePadding
    torch.manual_seed(0)
    conv = Conv2dAdaptivePadding(3, 4, 5, stride=2)
    model = nn.Sequential(conv)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = conv(x)
        quantize_model(model, QuantSettings(first_last='same'))
        layer = model[0]
        assert isinstance(layer, QuantConv2d) and layer.same_padding
        with quantization_disabled(model):
            assert torch.equal(model(x), ref)
        layer.input_quantizer.set_alpha(torch.tensor(4.0))
        layer.input_quantizer.set_grid(Grid(4, 'signed'))
        layer.weight_quantizer.set_alpha(conv.weight.abs().max())
        expected = nn.functional.conv2d(
            nn.functional.pad(layer.input_quantizer(x), _tf_same(size)),
            layer.quantized_weight_and_bias()[0],
            layer.quantized_weight_and_bias()[1], stride=2)
        assert torch.allclose(model(x), expected, atol=1e-6)


def _tf_same(size, k=5, s=2):
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return [total // 2, total - total // 2] * 2


def test_conv_with_a_forward_of_its_own_is_refused_by_name():
    """A Conv2d subclass whose forward mmlapq cannot reproduce (weight
    standardisation) stops the plan with one line naming it and the
    exclude that leaves it float; excluded, the rest quantizes."""
    from mmcv.cnn.bricks import ConvWS2d
    model = nn.Sequential(nn.Conv2d(3, 4, 3), ConvWS2d(4, 4, 3),
                          nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match=r"layer 1 is a ConvWS2d.*"
                       r"quantizer.exclude=\['1'\]"):
        plan_layers(model, QuantSettings())
    plans = plan_layers(model, QuantSettings(exclude=['1']))
    assert [p.name for p in plans] == ['0', '2']


def test_multihead_attention_projection_stays_float():
    """nn.MultiheadAttention reads out_proj's weight without calling it: a
    quantized twin would never run, so it is not planned."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return self.fc(self.attn(x, x, x)[0])

    names = [p.name for p in plan_layers(Block(), QuantSettings(
        first_last='same'))]
    assert names == ['fc']


@pytest.mark.parametrize('padding, mode', [('same', 'zeros'),
                                           ('same', 'reflect'),
                                           ('valid', 'zeros')])
def test_string_padding_is_kept(padding, mode):
    """nn.Conv2d's own string padding ('same' pads one more on the right
    for an even kernel) and padding modes survive the wrap."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 4, padding=padding,
                                    padding_mode=mode))
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        ref = model(x)
        quantize_model(model, QuantSettings(first_last='same'))
        assert isinstance(model[0], QuantConv2d)
        with quantization_disabled(model):
            assert torch.equal(model(x), ref)
