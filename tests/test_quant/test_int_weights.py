"""Integer codes of quantized weights: exact, and packed two per byte."""
import pytest
import torch
import torch.nn as nn

from mmlapq.quant import Grid, QuantConv2d
from mmlapq.quant.int_weights import (integer_grid_error, layer_weight_codes,
                                      pack_codes, unpack_codes)


@pytest.mark.parametrize('bits', list(range(2, 17)))
@pytest.mark.parametrize('kind', ['signed', 'unsigned'])
def test_pack_roundtrip_and_size(bits, kind):
    """Every width the grids allow: a cast to uint8 above 8 bits (the old
    packing) lost 767 of the 1023 codes at 10 bits."""
    grid = Grid(bits, kind)
    low = -grid.qmax if kind == 'signed' else 0
    codes = torch.randint(low, grid.qmax + 1, (7, 3, 3), dtype=torch.int32)
    codes.view(-1)[:2] = torch.tensor([low, grid.qmax])  # both ends
    packed = pack_codes(codes, grid)
    assert torch.equal(unpack_codes(packed), codes)
    expected = torch.uint8 if bits <= 8 else torch.int16
    assert packed['data'].dtype == expected
    assert packed['data'].numel() == (32 if bits <= 4 else 63)  # 63 values


def test_pack_refuses_codes_off_the_grid():
    with pytest.raises(ValueError, match='outside -7..7'):
        pack_codes(torch.tensor([8]), Grid(4, 'signed'))


@pytest.mark.parametrize('per_channel', [False, True])
def test_codes_give_back_the_quantized_weight_bit_for_bit(per_channel):
    torch.manual_seed(0)
    layer = QuantConv2d.from_float(nn.Conv2d(8, 6, 3), Grid(4, 'signed'),
                                   None, per_channel=per_channel)
    alpha = layer.weight.detach().abs().amax((1, 2, 3)) * 0.7 \
        if per_channel else 0.7 * float(layer.weight.abs().max())
    layer.weight_quantizer.set_alpha(alpha)
    w_hat, _ = layer.quantized_weight_and_bias()
    codes = layer_weight_codes(layer)
    assert int(codes.abs().max()) == 7  # clipped weights sit at the ends
    assert torch.equal(layer.weight_quantizer.dequantize(codes.float()),
                       w_hat)


def test_midrise_has_no_integer_codes():
    assert 'midrise' in integer_grid_error(Grid(4, 'midrise'))
    assert integer_grid_error(Grid(4, 'signed')) == ''


def test_weight_from_codes_takes_the_float_weights_memory_format():
    """A reloaded model converts its code buffers to channels-last while
    the run's GPTQ codes were contiguous: the quantized weight must not
    depend on that (the conv kernel, and its rounding, would)."""
    torch.manual_seed(0)
    layer = QuantConv2d.from_float(nn.Conv2d(8, 6, 3), Grid(4, 'signed'),
                                   None)
    layer.weight_quantizer.set_alpha(0.2)
    layer.to(memory_format=torch.channels_last)
    codes = layer_weight_codes(layer).float()
    for layout in (torch.contiguous_format, torch.channels_last):
        layer.set_weight_codes(codes.contiguous(memory_format=layout))
        w, _ = layer.quantized_weight_and_bias()
        assert w.is_contiguous(memory_format=torch.channels_last)
