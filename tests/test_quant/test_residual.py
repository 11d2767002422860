"""Quantized residual adds of the integer target (quant/residual.py): each
adding block quantizes its input once for its first convs and its identity
shortcut, and both operands of its add; known answers on mmcls's ResNet
and MobileNetV2 blocks."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS, init_default_scope

import mmlapq  # noqa: F401
from mmlapq.quant import (QuantSettings, fold_batch_norms,
                          quantization_disabled, quantize_model, quantizers)


def backbone(cfg: dict) -> nn.Module:
    init_default_scope('mmcls')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.eval()  # mmcls's ResNet.train() returns None
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # BN statistics of a trained net
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def with_clips(model: nn.Module) -> nn.Module:
    """Every clip set from its tensor's range (seeded, deterministic)."""
    g = torch.Generator().manual_seed(1)
    for name, q in quantizers(model).items():
        if name.endswith('.weight'):
            q.set_alpha(torch.full(q.alpha.shape, 0.2))
        else:
            q.set_alpha(1.0 + torch.rand((), generator=g).item())
    return model


def resnet18():
    return backbone(dict(type='ResNet', depth=18))


def test_disabled_quantization_is_the_folded_float_model():
    float_model = resnet18()
    folded = copy.deepcopy(float_model)
    fold_batch_norms(folded)
    model = copy.deepcopy(float_model)
    quantize_model(model, QuantSettings())
    with_clips(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), quantization_disabled(model):
        assert torch.equal(model(x)[0], folded(x)[0])
    # The quantizers add no state: the keys of the folded model.
    assert set(model.state_dict()) == set(folded.state_dict())


def test_clip_names_and_shared_block_input():
    model = resnet18()
    quantize_model(model, QuantSettings(shortcut_bits=None))
    names = set(quantizers(model))
    assert {'layer1.0.input', 'layer1.0.bn2.input', 'layer2.0.input',
            'layer2.0.bn2.input', 'layer2.0.downsample.1.input'} <= names
    assert 'layer1.0.conv1.input' not in names  # the block's now
    block = model.layer2[0]
    # The block's input keeps the convs' 4 bits; the operands get add_bits.
    assert block.input_quantizer.bits == 4
    assert block.bn2.input_quantizer.bits == 8
    assert block.downsample[1].input_quantizer.bits == 8
    for conv in (block.conv1, block.downsample[0]):
        assert conv.input_quantizer is None
        assert conv.input_grid_quantizer() is block.input_quantizer
    assert block.conv2.input_quantizer is not None
    same = resnet18()
    quantize_model(same, QuantSettings(add_bits=None, shortcut_bits=None))
    assert same.layer2[0].bn2.input_quantizer.bits == 4
    assert 'conv1.input' in ' '.join(
        quantizers(quantize_model_fake_quant(resnet18())))


def test_the_default_shortcut_is_held_at_8_bits():
    """W4A4: the shortcut carries 8-bit codes, the convs requantize them to
    their own 4 bits; W8A8: one shared quantizer (equal bits)."""
    wide = resnet18()
    quantize_model(wide, QuantSettings())
    block = wide.layer2[0]
    assert block.input_quantizer.bits == 8
    assert block.conv1.input_quantizer.bits == 4
    assert block.downsample[0].input_quantizer.bits == 4
    assert 'layer2.0.conv1.input' in quantizers(wide)
    eight = resnet18()
    quantize_model(eight, QuantSettings(w_bits=8, a_bits=8))
    assert eight.layer2[0].conv1.input_quantizer is None
    assert eight.layer2[0].input_quantizer.bits == 8


@pytest.mark.parametrize('conv1_bits, down_bits, shortcut_bits', [
    (8, 4, 8), (4, 8, None), (4, 8, 8), (8, 4, None)])
def test_each_first_conv_runs_at_its_own_input_width(conv1_bits, down_bits,
                                                      shortcut_bits):
    """Mixed precision may give a block's two first convs different input
    widths: each conv's input is on a grid of its own planned bits (the
    narrower one requantizes the block's input), never its neighbour's."""
    model = resnet18()
    quantize_model(model, QuantSettings(shortcut_bits=shortcut_bits,
                                        overrides={
        'layer2.0.conv1': dict(a_bits=conv1_bits),
        'layer2.0.downsample.0': dict(a_bits=down_bits)}))
    block = model.layer2[0]
    conv1, down = block.conv1, block.downsample[0]
    assert conv1.input_grid_quantizer().bits == conv1_bits
    assert down.input_grid_quantizer().bits == down_bits
    # the block's quantizer is at least as wide as both convs
    assert block.input_quantizer.bits == max(conv1_bits, down_bits,
                                             shortcut_bits or 0)
    narrow = conv1 if conv1_bits < down_bits else down
    assert narrow.input_quantizer is not None
    with_clips(model)
    x = torch.randn(2, 64, 8, 8)
    seen = {}
    hook = down.register_forward_pre_hook(
        lambda m, args: seen.setdefault('x', args[0]))
    with torch.no_grad():
        block(x)
    hook.remove()
    xq = block.input_quantizer(x)
    want = down.input_quantizer(xq) if down.input_quantizer is not None \
        else xq
    step = down.input_grid_quantizer().grid.step(
        float(down.input_grid_quantizer().alpha))
    got = seen['x'] if down.input_quantizer is None else \
        down.input_quantizer(seen['x'])
    assert torch.equal(got, want)
    levels = torch.unique(torch.round(got / step))
    assert len(levels) <= 2 ** down_bits


def quantize_model_fake_quant(model):
    plans = quantize_model(model, QuantSettings(target='fake_quant'))
    assert {p.type for p in plans} == {'Conv2d'}  # no pool, no residual
    return model


@pytest.mark.parametrize('shortcut_bits', [None, 8])
@pytest.mark.parametrize('index', [(1, 1), (2, 0)])
def test_basic_block_adds_what_an_integer_runtime_adds(index, shortcut_bits):
    """relu(Q_a(branch(Q_x(x))) + shortcut), the shortcut being Q_x(x)
    itself or Q_b(downsample(Q_x(x))): the add sees quantized operands and
    the identity the same codes as conv1."""
    model = resnet18()
    quantize_model(model, QuantSettings(shortcut_bits=shortcut_bits))
    with_clips(model)
    block = getattr(model, f'layer{index[0]}')[index[1]]
    x = torch.randn(2, block.conv1.in_channels, 8, 8).relu_()
    with torch.no_grad():
        xq = block.input_quantizer(x)
        # (an 8-bit shortcut: conv1 requantizes xq with its own quantizer)
        branch = block.conv2(block.relu(block.conv1(xq)))
        branch = block.bn2.input_quantizer(branch)
        if block.downsample is not None:
            shortcut = block.downsample[1].input_quantizer(
                block.downsample[0](xq))
        else:
            shortcut = xq
        want = torch.relu(branch + shortcut)
        got = block(x)
    assert torch.equal(got, want)
    assert not torch.equal(xq, x)  # the identity does see codes


def test_inverted_residual_adds_quantized_operands():
    model = backbone(dict(type='MobileNetV2', widen_factor=1.0))
    quantize_model(model, QuantSettings())
    with_clips(model)
    adding = model.layer2[1]
    assert adding.use_res_connect
    plain = model.layer2[0]  # stride 2: no add, no block quantizer
    assert not hasattr(plain, 'input_quantizer')
    assert plain.conv[0].conv.input_quantizer is not None
    x = torch.randn(2, adding.conv[0].conv.in_channels, 8, 8)
    with torch.no_grad():
        xq = adding.input_quantizer(x)
        last = adding.conv[-1]
        branch = adding.conv[:-1](xq)
        branch = last.norm.input_quantizer(last.conv(branch))
        want = xq + branch
        assert torch.equal(adding(x), want)


def test_a_block_of_another_class_keeps_a_float_add():
    from mmcls.models.backbones.resnet import BasicBlock

    class MyBlock(BasicBlock):  # e.g. an SE block: its forward differs
        pass

    model = resnet18()
    old = model.layer1[1]
    block = MyBlock(64, 64)
    block.load_state_dict(old.state_dict())
    model.layer1[1] = block.eval()
    quantize_model(model, QuantSettings())
    assert not hasattr(block, 'input_quantizer')
    assert block.conv1.input_quantizer is not None
    assert hasattr(model.layer1[0], 'input_quantizer')


@pytest.mark.parametrize('cfg', [
    dict(type='ResNeXt', depth=50, groups=4, width_per_group=4),
    dict(type='RegNet', arch='regnetx_400mf')])
def test_resnext_and_regnet_bottlenecks_add_quantized_operands(cfg):
    """ResNeXt's Bottleneck (RegNet builds its blocks from it) keeps
    ResNet's forward: each block quantizes its input and both operands of
    its add, and the wrapped model without clips is the folded float
    model."""
    model = backbone(cfg)
    folded = copy.deepcopy(model)
    fold_batch_norms(folded)
    quantize_model(model, QuantSettings())
    from mmlapq.quant.qmodules import unquantized_class
    blocks = [m for m in model.modules()
              if unquantized_class(m).__name__ == 'Bottleneck']
    assert blocks and all(getattr(b, 'input_quantizer', None) is not None
                          and b.norm3.input_quantizer is not None
                          for b in blocks)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), quantization_disabled(model):
        torch.testing.assert_close(model(x)[-1], folded(x)[-1])
