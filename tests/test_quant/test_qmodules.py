"""The integer bias of quantized layers (``int_bias``, the integer
target): known answers and cache invalidation."""
import torch
import torch.nn as nn

from mmlapq.quant import Grid, QuantConv2d, QuantLinear


def layer(int_bias: bool, per_channel: bool = False) -> QuantConv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    q = QuantConv2d.from_float(conv, Grid(4), Grid(4, 'unsigned'),
                               per_channel=per_channel, int_bias=int_bias)
    q.weight_quantizer.set_alpha(
        torch.tensor([0.1, 0.2, 0.15, 0.12]) if per_channel else 0.15)
    q.input_quantizer.set_alpha(2.0)
    return q


def test_the_bias_is_an_int32_multiple_of_input_step_times_weight_step():
    for per_channel in (False, True):
        q = layer(True, per_channel)
        w_step = q.weight_quantizer.grid.step(q.weight_quantizer.alpha)
        step = torch.tensor(2.0 / 15) * w_step
        assert torch.equal(q.bias_step(), step.expand(4))
        _, bias = q.quantized_weight_and_bias()
        codes = bias / step
        assert torch.equal(codes, torch.round(codes))
        assert torch.equal(bias, torch.round(q.bias / step) * step)
        assert not torch.equal(bias, q.bias)  # the rounding is real here


def test_the_bias_follows_the_input_clip():
    q = layer(True)
    _, before = q.quantized_weight_and_bias()
    q.input_quantizer.set_alpha(3.0)
    _, after = q.quantized_weight_and_bias()
    assert not torch.equal(before, after)
    step = q.bias_step()
    assert torch.equal(after, torch.round(q.bias / step) * step)


def test_no_integer_bias_without_both_grids_or_when_off():
    assert layer(False).bias_step() is None
    _, bias = layer(False).quantized_weight_and_bias()
    assert torch.equal(bias, layer(False).bias)
    linear = QuantLinear.from_float(nn.Linear(4, 2), Grid(4), None,
                                    int_bias=True)
    linear.weight_quantizer.set_alpha(0.5)
    assert linear.bias_step() is None  # a float input: no integer grid
