"""GPTQ rounding (Frantar et al., 2022): choose which grid point each weight
takes so that the layer's output error on its calibration inputs is small,
not each weight's own error.

For a layer with weights W (rows: output channels; columns: input features,
a conv's Cin/groups x kh x kw, each group of a grouped conv on its own) and
inputs X, H = 2 X X^T / n. Columns are rounded one after another on the
layer's grid at its clip; the rounding error of each column is spread over
the columns not yet rounded through the upper Cholesky factor of H^-1, in
blocks of columns. With a diagonal H nothing is spread, and the result is
round-to-nearest.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .grids import check_type

# Unfolded conv inputs handled at once (elements): bounds the memory of
# im2col on large feature maps.
_UNFOLD_ELEMENTS = 1 << 25


@dataclass
class GPTQSettings:
    damp: float = 0.01         # lambda: damp * mean(diag H) on the diagonal
    block_size: int = 128      # columns per lazy update
    act_order: bool = False    # columns by descending diag(H)
    # Layers with more input columns keep nearest rounding: H is d x d and
    # its Cholesky O(d^3) (VGG's first FC layer has d = 25088).
    max_columns: int = 8192

    def __post_init__(self):
        check_type('gptq.max_columns', self.max_columns, int)
        check_type('gptq.damp', self.damp, float)
        check_type('gptq.block_size', self.block_size, int)
        check_type('gptq.act_order', self.act_order, bool)
        if not self.damp > 0:
            raise ValueError(f'gptq.damp={self.damp} must be > 0')
        if self.block_size < 1:
            raise ValueError(f'gptq.block_size={self.block_size} must be >= 1')


class HessianAccumulator:
    """Sum of X X^T over a layer's inputs, one [d, d] block per group."""

    def __init__(self, layer: nn.Module):
        if isinstance(layer, nn.Conv2d):
            self.groups = layer.groups
            self.dim = layer.in_channels // layer.groups * \
                layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, nn.Linear):
            self.groups, self.dim = 1, layer.in_features
        else:
            raise TypeError(f'GPTQ rounds Conv2d and Linear weights, not '
                            f'{type(layer).__name__}')
        self.layer = layer
        self.sum: Optional[torch.Tensor] = None
        self.count = 0

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        """[groups, dim, n]: one column per output position."""
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return x.reshape(-1, self.dim).t().unsqueeze(0)
        padding = layer.padding
        if layer.padding_mode != 'zeros':  # as nn.Conv2d pads these
            x = F.pad(x, layer._reversed_padding_repeated_twice,
                      mode=layer.padding_mode)
            padding = 0
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation,
                        padding=padding, stride=layer.stride)  # [N, C*k, L]
        n, _, positions = cols.shape
        cols = cols.reshape(n, self.groups, self.dim, positions)
        return cols.permute(1, 2, 0, 3).reshape(self.groups, self.dim, -1)

    def add(self, x: torch.Tensor) -> None:
        """Accumulate the inputs ``x`` of one batch."""
        x = x.detach().float()
        per_sample = max(1, x[0].numel() * (
            self.layer.kernel_size[0] * self.layer.kernel_size[1]
            if isinstance(self.layer, nn.Conv2d) else 1))
        chunk = max(1, _UNFOLD_ELEMENTS // per_sample)
        for part in x.split(chunk):
            cols = self._columns(part)
            update = cols @ cols.transpose(1, 2)
            self.sum = update if self.sum is None else self.sum + update
            self.count += cols.shape[-1]

    def hessian(self, reduce_sum: Optional[Callable] = None) -> torch.Tensor:
        """2 X X^T / n, [groups, dim, dim]; ``reduce_sum`` sums the sum and
        the count over processes."""
        if self.sum is None:
            raise RuntimeError('no calibration input reached this layer')
        total = self.sum.double()
        count = torch.tensor(float(self.count), dtype=torch.float64,
                             device=total.device)
        if reduce_sum is not None:
            total, count = reduce_sum(total), reduce_sum(count)
        return (2 * total / count).float()


def gptq_round(weight: torch.Tensor, hessian: torch.Tensor,
               quantize: Callable[[torch.Tensor], torch.Tensor],
               settings: GPTQSettings = GPTQSettings()) -> torch.Tensor:
    """Round ``weight`` [rows, d] column by column with the error feedback
    of ``hessian`` [d, d]; ``quantize(column)`` rounds one column [rows] to
    the nearest grid point. Returns the rounded weights (on the grid)."""
    W = weight.detach().float().clone()
    H = hessian.detach().double().clone()
    d = W.shape[1]
    dead = torch.diagonal(H) == 0  # inputs that were always zero
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = None
    if settings.act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    H += settings.damp * torch.diagonal(H).mean() * torch.eye(
        d, dtype=H.dtype, device=H.device)
    # Upper Cholesky factor of H^-1: row i holds how the error of column i
    # moves the columns after it.
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)),
                              upper=True).float()
    Q = torch.zeros_like(W)
    for i1 in range(0, d, settings.block_size):
        i2 = min(i1 + settings.block_size, d)
        block = W[:, i1:i2].clone()
        errors = torch.zeros_like(block)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = block[:, i]
            q = quantize(w)
            Q[:, i1 + i] = q
            err = (w - q) / U1[i, i]
            block[:, i:] -= err[:, None] * U1[i, i:][None, :]
            errors[:, i] = err
        W[:, i2:] -= errors @ U[i1:i2, i2:]
    if perm is not None:
        Q = Q[:, torch.argsort(perm)]
    return Q


def gptq_codes(layer: nn.Module, hessian: torch.Tensor,
               settings: GPTQSettings = GPTQSettings()) -> torch.Tensor:
    """Integer codes (as floats, shaped like the weight) of a quantized
    layer's weight rounded by GPTQ on its grid at its current clip(s)."""
    wq = layer.weight_quantizer
    grid, alpha = wq.grid, wq.alpha
    weight = layer.weight.detach()
    rows = weight.shape[0]
    groups = hessian.shape[0]
    per_group = rows // groups
    flat = weight.reshape(rows, -1).float()
    codes = torch.empty_like(flat)
    for g in range(groups):
        part = slice(g * per_group, (g + 1) * per_group)
        a = alpha[part] if alpha.dim() else alpha

        def quantize(column, a=a):
            return grid.quantize(column, a)

        rounded = gptq_round(flat[part], hessian[g], quantize, settings)
        a_col = a[:, None] if a.dim() else a
        codes[part] = grid.to_codes(rounded, a_col)
    return codes.reshape(weight.shape)
