"""Device hygiene without a GPU: the pure functions run on tensors on the
``meta`` device, where torch refuses a CPU operand exactly as CUDA does
("... is not on the expected device"). A tensor created without
``device=`` inside any of them fails these tests."""
import pytest
import torch
import torch.nn as nn

from mmlapq.quant import (Grid, QuantConv2d, QuantLinear, WeightClipper,
                          fold_bn_into_conv, lp_clip_tensor)
from mmlapq.quant.clip_init import aciq_clip, lp_errors, search_lp_clip

META = torch.device('meta')


def meta(*shape):
    return torch.empty(*shape, device=META)


@pytest.mark.parametrize('kind', ['signed', 'midrise', 'unsigned'])
def test_grid_quantize_on_meta(kind):
    grid = Grid(4, kind)
    assert grid.quantize(meta(8, 3), 0.5).device == META
    assert grid.quantize(meta(8, 3), meta(8, 1)).device == META


def test_lp_search_on_meta():
    grid = Grid(4)
    values = meta(3, 100)
    assert lp_errors(values, None, grid, meta(5, 3), 2.5).device == META
    assert search_lp_clip(values, None, grid, 3.0).shape == (3, )
    assert search_lp_clip(values, meta(3, 100), grid, 3.0).device == META
    assert lp_clip_tensor(meta(16, 3, 3, 3), grid, 2.0,
                          per_channel=True).device == META


@pytest.mark.parametrize('method', ['max', 'lp', 'aciq', 'percentile'])
@pytest.mark.parametrize('per_channel', [True, False])
def test_weight_clipper_on_meta(method, per_channel):
    clipper = WeightClipper(meta(8, 4, 3, 3), per_channel=per_channel)
    clip = clipper.clip(Grid(3), method, p=3.0)
    assert clip.device == META
    assert clip.shape == ((8, ) if per_channel else ())


def test_aciq_and_bn_folding_on_meta():
    assert aciq_clip(meta(4), meta(4), Grid(4)).device == META
    conv = nn.Conv2d(3, 8, 3, bias=False).to(META)
    bn = nn.BatchNorm2d(8).to(META)
    fold_bn_into_conv(conv, bn)
    assert conv.bias.device == META


def test_quantized_layers_on_meta():
    """The weight path (per-channel clips broadcast on the layer's device)
    and the cached quantized weight. (torch has no meta kernel for the
    fused per-tensor fake-quantize, so inputs stay float here.)"""
    conv = QuantConv2d.from_float(nn.Conv2d(3, 8, 3), Grid(4), None,
                                  per_channel=True)
    conv.weight_quantizer.set_alpha(torch.full((8, ), 0.3))
    conv.to(META)
    assert conv(meta(2, 3, 8, 8)).shape == (2, 8, 6, 6)
    linear = QuantLinear.from_float(nn.Linear(6, 4), Grid(3, 'midrise'), None)
    linear.weight_quantizer.set_alpha(0.2)
    linear.to(META)
    assert linear(meta(5, 6)).device == META


class NoFloat64(torch.utils._python_dispatch.TorchDispatchMode):
    """Fails on any float64 result on ``meta``, as MPS fails on float64."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device == META and \
                    t.dtype == torch.float64:
                raise AssertionError(f'{func} made float64 on a device '
                                     'without float64')
        return out


@pytest.fixture
def meta_without_float64(monkeypatch):
    from mmlapq.quant import precision
    monkeypatch.setattr(precision, 'NO_FLOAT64', {'mps', 'meta'})
    with NoFloat64():
        yield


def test_sums_fall_back_to_float32_without_float64(meta_without_float64):
    """GPTQ's Hessian, the Lp errors, ACIQ and bias-correction sums use
    float64 only where the device has it (MPS has not)."""
    from mmlapq.quant.gptq import HessianAccumulator
    acc = HessianAccumulator(nn.Conv2d(3, 4, 3))
    acc.add(meta(2, 3, 6, 6))
    assert acc.hessian().dtype == torch.float32
    grid = Grid(4)
    assert lp_errors(meta(3, 100), None, grid, meta(5, 3), 2.5).dtype == \
        torch.float32
    clipper = WeightClipper(meta(8, 4, 3, 3), per_channel=True)
    assert clipper.clip(grid, 'aciq').device == META


def test_no_float64_check_can_fail(meta_without_float64):
    """The mode above does catch a hard-coded float64."""
    with pytest.raises(AssertionError, match='float64'):
        meta(3).double()


def test_integer_bias_and_block_inputs_on_meta():
    """The integer target on meta: the int32 bias (input and weight steps
    on the layer's device) and a module with a mixed-in input quantizer."""
    from mmlapq.quant.qmodules import quantize_module_input
    conv = QuantConv2d.from_float(nn.Conv2d(3, 8, 3), Grid(4),
                                  Grid(4, 'signed_full'), per_channel=True,
                                  int_bias=True)
    conv.weight_quantizer.set_alpha(torch.full((8, ), 0.3))
    conv.input_quantizer.set_alpha(1.5)
    conv.to(META)
    weight, bias = conv.quantized_weight_and_bias()
    assert bias.device == META and conv.bias_step().device == META
    pool = quantize_module_input(nn.AdaptiveAvgPool2d(1),
                                 Grid(8, 'unsigned'))
    pool.input_quantizer.set_alpha(2.0)
    pool.to(META)
    assert pool(meta(2, 8, 4, 4)).device == META


def test_learned_step_on_meta():
    """The learned activation step (quant/lsq.py) keeps its variable on the
    quantizer's device, and its forward and backward create nothing on
    the CPU."""
    from mmlapq.quant.lsq import LearnedStep
    from mmlapq.quant.qmodules import TensorQuantizer
    q = TensorQuantizer(Grid(4, 'unsigned'))
    q.set_alpha(2.0)
    q.to(META)  # the quantizer is on the device before the step is made,
    step = LearnedStep(q)  # as in the reconstruction: nothing is moved
    assert step.log_ratio.device == META
    assert step.alpha_start.device == META
    x = meta(4, 8).requires_grad_()
    out = step(x)
    assert out.device == META
    out.sum().backward()
