"""Quantized weights as integers: the codes each weight takes on its grid,
packed two per byte at 4 bits and below.

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
    return (-grid.qmax if grid.kind == 'signed' else 0, grid.qmax)


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
    """The integer code of every weight of a quantized layer (int16), as
    its forward uses them."""
    if layer.weight_codes is not None:
        return layer.weight_codes.round().to(torch.int16)
    if getattr(layer, 'weight_mean_correction', False):
        raise ValueError("weights with bias_correction='mean' are off the "
                         'grid and have no integer codes: use '
                         "bias_correction='empirical' or 'none'")
    w_hat, _ = layer.quantized_weight_and_bias()
    step = weight_step(layer).to(w_hat.device)
    return torch.round(w_hat / step).to(torch.int16)


def pack_codes(codes: torch.Tensor, grid: Grid) -> Dict[str, object]:
    """Codes as compact bytes: offset to 0..2^bits-1, two per byte at 4 bits
    and below (low nibble first), one per byte above."""
    low, _ = code_range(grid)
    flat = (codes.flatten().to(torch.int16) - low).to(torch.uint8)
    if grid.bits <= 4:
        if flat.numel() % 2:
            flat = torch.cat([flat, flat.new_zeros(1)])
        flat = flat[0::2] | (flat[1::2] << 4)
    return dict(data=flat.contiguous(), shape=list(codes.shape),
                bits=grid.bits, low=int(low))


def unpack_codes(packed: Dict[str, object]) -> torch.Tensor:
    """The int16 codes of :func:`pack_codes`."""
    data, shape = packed['data'], packed['shape']
    numel = 1
    for size in shape:
        numel *= int(size)
    if packed['bits'] <= 4:
        data = torch.stack([data & 0xF, data >> 4], dim=1).flatten()[:numel]
    return (data.to(torch.int16) + int(packed['low'])).reshape(shape)
