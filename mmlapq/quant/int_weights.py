"""Quantized weights as integers: the codes each weight takes on its grid,
packed two per byte at 4 bits and below, one byte up to 8 bits, two bytes
up to 16.

A layer's quantized weight is ``codes x step`` (signed and unsigned grids)
at its clip, so storing the codes and the clip gives back exactly the
weight the run computed with. The codes are read off the layer's own
fake-quantized weight (or GPTQ's chosen levels), not recomputed another
way, so they match it bit for bit.
"""
from typing import Dict

import torch
import torch.nn as nn

from .grids import Grid


def integer_grid_error(grid: Grid) -> str:
    """Why weights on ``grid`` cannot be stored as integer codes with an
    integer zero point ('' when they can)."""
    if grid.kind == 'midrise':
        return ("the 'midrise' weight grid has no level at zero (its zero "
                'point would be half an integer): quantize with '
                "w_grid='signed'")
    return ''


def code_range(grid: Grid) -> tuple:
    """(lowest, highest) integer code of ``grid``."""
    return (grid.qmin, grid.qmax)


def weight_step(layer: nn.Module) -> torch.Tensor:
    """The grid step of the layer's weight: a scalar, or one per output
    channel shaped to broadcast against the weight."""
    wq = layer.weight_quantizer
    if wq.channel_axis is None:
        return torch.tensor(wq.grid.step(float(wq.alpha)),
                            dtype=torch.float32)
    shape = [-1] + [1] * (layer.weight.dim() - 1)
    return wq.grid.step(wq.alpha.float()).view(shape)


def layer_weight_codes(layer: nn.Module) -> torch.Tensor:
    """The integer code of every weight of a quantized layer (int32: a
    16-bit unsigned grid reaches 65535), as its forward uses them."""
    if layer.weight_codes is not None:
        return layer.weight_codes.round().to(torch.int32)
    if getattr(layer, 'weight_mean_correction', False):
        raise ValueError("weights with bias_correction='mean' are off the "
                         'grid and have no integer codes: use '
                         "bias_correction='empirical' or 'none'")
    w_hat, _ = layer.quantized_weight_and_bias()
    step = weight_step(layer).to(w_hat.device)
    return torch.round(w_hat / step).to(torch.int32)


# Codes of 9 to 16 bits, offset to 0..2^bits-1, are stored in int16 shifted
# down by this (torch has no general-purpose uint16).
_INT16_SHIFT = 1 << 15


def storage(bits: int) -> str:
    """How codes of ``bits`` are stored: 'nibbles' (two per byte, 4 bits
    and below), 'uint8' (up to 8) or 'int16' (up to 16). The one home of
    the packing rule: the checkpoint and the size budget both read it."""
    if bits <= 4:
        return 'nibbles'
    return 'uint8' if bits <= 8 else 'int16'


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes that :func:`pack_codes` stores ``numel`` codes of ``bits``
    in."""
    return {'nibbles': (numel + 1) // 2, 'uint8': numel,
            'int16': 2 * numel}[storage(bits)]


def pack_codes(codes: torch.Tensor, grid: Grid) -> Dict[str, object]:
    """Codes as compact bytes (:func:`storage`): offset to 0..2^bits-1,
    then two per byte (low nibble first), one uint8, or one int16 (shifted
    by -2^15)."""
    low, high = code_range(grid)
    flat = codes.flatten().to(torch.int32)
    if flat.numel() and (int(flat.min()) < low or int(flat.max()) > high):
        raise ValueError(f'codes outside {low}..{high} cannot be stored on '
                         f'a {grid.bits}-bit {grid.kind} grid')
    flat = flat - low
    kind = storage(grid.bits)
    if kind == 'int16':
        data = (flat - _INT16_SHIFT).to(torch.int16)
    else:
        data = flat.to(torch.uint8)
        if kind == 'nibbles':
            if data.numel() % 2:
                data = torch.cat([data, data.new_zeros(1)])
            data = data[0::2] | (data[1::2] << 4)
    return dict(data=data.contiguous(), shape=list(codes.shape),
                bits=grid.bits, low=int(low))


def unpack_codes(packed: Dict[str, object]) -> torch.Tensor:
    """The int32 codes of :func:`pack_codes`."""
    data, shape, bits = packed['data'], packed['shape'], packed['bits']
    numel = 1
    for size in shape:
        numel *= int(size)
    kind = storage(bits)
    if kind == 'int16':
        flat = data.to(torch.int32) + _INT16_SHIFT
    elif kind == 'nibbles':
        flat = torch.stack([data & 0xF, data >> 4],
                           dim=1).flatten()[:numel].to(torch.int32)
    else:
        flat = data.to(torch.int32)
    return (flat + int(packed['low'])).reshape(shape)
