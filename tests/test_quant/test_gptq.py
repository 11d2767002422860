"""Known answers for GPTQ rounding: nearest rounding when the Hessian is
diagonal, a much lower output error than nearest rounding on correlated
inputs, integer codes on the grid, conv groups."""
import pytest
import torch
import torch.nn as nn

from mmlapq.quant import Grid, QuantConv2d, QuantLinear
from mmlapq.quant.gptq import (GPTQSettings, HessianAccumulator, gptq_codes,
                               gptq_round)


def correlated_inputs(n=4096, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5 + torch.eye(d)
    return torch.randn(n, 8, generator=g) @ torch.randn(8, d, generator=g) \
        + 0.3 * torch.randn(n, d, generator=g) @ mix


def output_error(w, q, x):
    return float(((x @ (w - q).t())**2).mean())


def test_diagonal_hessian_gives_nearest_rounding():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    grid, alpha = Grid(3), 1.5
    hessian = torch.diag(torch.rand(32) + 0.1)
    for act_order in (False, True):
        q = gptq_round(w, hessian, lambda c: grid.quantize(c, alpha),
                       GPTQSettings(block_size=8, act_order=act_order))
        assert torch.equal(q, grid.quantize(w, alpha))


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_correlated_inputs_lower_the_output_error(bits):
    x = correlated_inputs()
    layer = nn.Linear(64, 32)
    torch.manual_seed(1)
    w = layer.weight.detach() * 3
    grid = Grid(bits)
    alpha = float(w.abs().max()) * 0.8
    acc = HessianAccumulator(layer)
    acc.add(x)
    for act_order in (False, True):
        q = gptq_round(w, acc.hessian()[0], lambda c: grid.quantize(c, alpha),
                       GPTQSettings(act_order=act_order))
        nearest = output_error(w, grid.quantize(w, alpha), x)
        # measured ratios 0.18-0.22: at least a 40% lower output error
        assert output_error(w, q, x) < 0.6 * nearest
        codes = grid.to_codes(q, alpha)
        assert torch.equal(codes, codes.round())
        assert int(codes.abs().max()) <= grid.qmax
        assert torch.allclose(grid.from_codes(codes, alpha), q)


def test_blocks_give_the_same_result_as_one_column_at_a_time():
    x = correlated_inputs(d=40)
    w = torch.randn(8, 40)
    acc = HessianAccumulator(nn.Linear(40, 8))
    acc.add(x)
    grid = Grid(3)
    runs = [gptq_round(w, acc.hessian()[0], lambda c: grid.quantize(c, 2.0),
                       GPTQSettings(block_size=b)) for b in (1, 7, 128)]
    assert torch.allclose(runs[0], runs[1], atol=1e-5)
    assert torch.allclose(runs[0], runs[2], atol=1e-5)


CONVS = [  # (stride, dilation, groups, padding, padding_mode, kernel)
    (1, 1, 1, 1, 'zeros', 3),
    (2, 1, 1, 1, 'zeros', 3),
    (1, 2, 1, 2, 'zeros', 3),
    (1, 1, 2, 1, 'zeros', 3),          # grouped
    (1, 1, 4, 1, 'zeros', 3),          # depthwise
    (1, 1, 1, 'same', 'zeros', 3),
    (1, 2, 1, 'same', 'zeros', 4),     # 'same' pads one more on the right
    (1, 1, 1, 'valid', 'zeros', 3),
    (1, 1, 1, 1, 'reflect', 3),
    (2, 1, 1, 1, 'circular', 3),
    (1, 1, 4, 'same', 'replicate', 3),
]


@pytest.mark.parametrize('stride,dilation,groups,padding,mode,k', CONVS)
def test_conv_hessian_known_answer(stride, dilation, groups, padding, mode,
                                   k):
    """w^T H w = 2 mean(y^2) for each output channel y = w * x of the conv
    itself: the Hessian sees exactly the patches the conv multiplies."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, k, stride=stride, dilation=dilation,
                     groups=groups, padding=padding, padding_mode=mode,
                     bias=False).double()
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    acc = HessianAccumulator(conv)
    acc.add(x[:1])
    acc.add(x[1:])  # batch by batch equals all at once
    h = acc.hessian()
    assert h.dtype == torch.float64  # summed in float64, kept so
    assert h.shape == (groups, 4 // groups * k * k, 4 // groups * k * k)
    with torch.no_grad():
        y = conv(x)
    per_group = 8 // groups
    for o in range(8):
        w = conv.weight[o].detach().reshape(-1)
        quadratic = w @ h[o // per_group] @ w
        expected = 2 * y[:, o].square().mean()
        assert float(quadratic) == pytest.approx(float(expected), rel=1e-9)


def test_hessian_sums_float32_inputs_in_float64():
    x = torch.randn(64, 16)
    acc = HessianAccumulator(nn.Linear(16, 4))
    acc.add(x)
    exact = 2 * x.double().t() @ x.double() / 64
    # float32 sums would be off by ~1e-7 relative
    torch.testing.assert_close(acc.hessian()[0], exact, rtol=1e-12, atol=0)


def test_depthwise_groups_are_rounded_in_one_batch_like_one_by_one():
    torch.manual_seed(0)
    conv = QuantConv2d.from_float(nn.Conv2d(6, 6, 3, groups=6, padding=1),
                                  Grid(3), None, per_channel=True)
    conv.weight_quantizer.set_alpha(
        conv.weight.detach().abs().amax((1, 2, 3)) * 0.8)
    acc = HessianAccumulator(conv)
    acc.add(torch.randn(8, 6, 7, 7).cumsum(1))  # correlated channels
    h = acc.hessian()
    codes = gptq_codes(conv, h)
    grid, alpha = Grid(3), conv.weight_quantizer.alpha
    for g in range(6):
        w = conv.weight.detach()[g].reshape(1, -1)
        one = gptq_round(w, h[g], lambda c, a=alpha[g]: grid.quantize(c, a))
        assert torch.equal(grid.to_codes(one, alpha[g]).reshape(1, 3, 3),
                           codes[g])


def test_gptq_runs_without_tf32_whatever_the_setting():
    from mmlapq.quant.precision import tf32_flags, tf32_mode
    seen = []

    def quantize(column):
        seen.append(tf32_flags())
        return Grid(4).quantize(column, 1.0)

    with tf32_mode(True):
        gptq_round(torch.randn(3, 5), torch.eye(5), quantize)
        assert tf32_flags() == dict(cuda_matmul=True, cudnn=True)
    assert seen and all(f == dict(cuda_matmul=False, cudnn=False)
                        for f in seen)


def test_act_order_keeps_tied_inputs_in_their_order():
    """Equal curvature everywhere: the stable sort is the identity, so
    act-order and plain order give the same rounding."""
    torch.manual_seed(0)
    w = torch.randn(6, 12)
    h = torch.full((12, 12), 0.5) + 0.5 * torch.eye(12)
    grid = Grid(3)
    runs = [gptq_round(w, h, lambda c: grid.quantize(c, 1.5),
                       GPTQSettings(act_order=a)) for a in (False, True)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize('per_channel', [False, True])
def test_gptq_codes_of_a_quantized_conv(per_channel):
    conv = QuantConv2d.from_float(nn.Conv2d(8, 4, 3), Grid(3), None,
                                  per_channel=per_channel)
    alpha = conv.weight.detach().abs().amax((1, 2, 3)) if per_channel \
        else conv.weight.detach().abs().max()
    conv.weight_quantizer.set_alpha(alpha * 0.7)
    x = torch.randn(16, 8, 10, 10)
    acc = HessianAccumulator(conv)
    acc.add(x)
    codes = gptq_codes(conv, acc.hessian())
    assert codes.shape == conv.weight.shape
    assert int(codes.abs().max()) <= 3 and torch.equal(codes, codes.round())
    with torch.no_grad():
        nearest = conv(x)
        conv.set_weight_codes(codes)
        rounded = conv(x)
        exact = nn.functional.conv2d(x, conv.weight, conv.bias)
    assert float(((rounded - exact)**2).mean()) < float(
        ((nearest - exact)**2).mean())


def test_codes_rescale_with_the_clip():
    layer = QuantLinear.from_float(nn.Linear(6, 3), Grid(4), None)
    layer.weight_quantizer.set_alpha(0.5)
    codes = torch.randint(-7, 8, (3, 6)).float()
    layer.set_weight_codes(codes)
    w, _ = layer.quantized_weight_and_bias()
    assert torch.allclose(w, codes * 0.5 / 7)
    layer.weight_quantizer.set_alpha(1.0)  # the cache sees the new clip
    w, _ = layer.quantized_weight_and_bias()
    assert torch.allclose(w, codes / 7)


@pytest.mark.parametrize('k,stride,size', [(3, 2, 9), (5, 2, 10), (3, 1, 7)])
def test_same_padding_hessian_known_answer(k, stride, size):
    """EfficientNet's convs pad by the input's size at each call (TF
    'same'): the Hessian of their quantized twin sees the padded patches."""
    from mmcv.cnn.bricks import Conv2dAdaptivePadding
    torch.manual_seed(0)
    conv = Conv2dAdaptivePadding(4, 6, k, stride=stride, bias=False).double()
    layer = QuantConv2d.from_float(conv, None, None)
    x = torch.randn(2, 4, size, size, dtype=torch.float64)
    acc = HessianAccumulator(layer)
    acc.add(x)
    h = acc.hessian()
    with torch.no_grad():
        y = conv(x)
    for o in range(6):
        w = conv.weight[o].detach().reshape(-1)
        assert float(w @ h[0] @ w) == pytest.approx(
            float(2 * y[:, o].square().mean()), rel=1e-9)
