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

Machine independence: H is summed in float64 (float32 sums of millions of
products round differently with each CPU's kernels and thread count) and
stays float64 through the Cholesky; act-order sorts stably; the matmuls run
in IEEE float32 whatever the TF32 setting (as the GPTQ authors do). The
groups of a grouped or depthwise conv are rounded together, batched (one
batched Cholesky instead of one per group).
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .grids import check_type
from .precision import tf32_mode, wide_dtype

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
    """Sum of X X^T over a layer's inputs, one [d, d] block per group, in
    float64 (see the module doc)."""

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
        """[groups, dim, n]: one column per output position, with the
        conv's own padding (string padding and padding modes included)."""
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return x.reshape(-1, self.dim).t().unsqueeze(0)
        if hasattr(layer, 'pad_input'):
            x = layer.pad_input(x)  # 'same' padding by the input's size
        padding = layer.padding
        if layer.padding_mode != 'zeros' or isinstance(padding, str):
            # What nn.Conv2d pads: 'same' may pad one more on the right.
            mode = 'constant' if layer.padding_mode == 'zeros' \
                else layer.padding_mode
            x = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)
            padding = 0
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation,
                        padding=padding, stride=layer.stride)  # [N, C*k, L]
        n, _, positions = cols.shape
        cols = cols.reshape(n, self.groups, self.dim, positions)
        return cols.permute(1, 2, 0, 3).reshape(self.groups, self.dim, -1)

    def add(self, x: torch.Tensor) -> None:
        """Accumulate the inputs ``x`` of one batch."""
        x = x.detach().to(wide_dtype(x.device))
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
        """2 X X^T / n, [groups, dim, dim] (float64 where the device has
        it); ``reduce_sum`` sums the sum and the count over processes."""
        if self.sum is None:
            raise RuntimeError('no calibration input reached this layer')
        total = self.sum
        count = torch.tensor(float(self.count), dtype=total.dtype,
                             device=total.device)
        if reduce_sum is not None:
            total, count = reduce_sum(total), reduce_sum(count)
        return 2 * total / count


def _inverse_cholesky(H: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 for a batch [G, d, d], in float64
    (on the CPU for a device without float64)."""
    device = H.device
    H = H.to('cpu' if wide_dtype(device) != torch.float64 else device,
             torch.float64)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)),
                              upper=True)
    return U.to(device)


def gptq_round(weight: torch.Tensor, hessian: torch.Tensor,
               quantize: Callable[[torch.Tensor], torch.Tensor],
               settings: GPTQSettings = GPTQSettings()) -> torch.Tensor:
    """Round ``weight`` [rows, d] column by column with the error feedback
    of ``hessian`` [d, d]; ``quantize(column)`` rounds one column [rows] to
    the nearest grid point. Returns the rounded weights (on the grid).

    Batched: ``weight`` [G, rows, d] with ``hessian`` [G, d, d] rounds G
    independent problems at once (the groups of a conv); ``quantize`` then
    gets columns [G, rows]."""
    batched = weight.dim() == 3
    if not batched:
        weight, hessian = weight[None], hessian[None]
        one = quantize

        def quantize(column):
            return one(column[0])[None]
    with tf32_mode(False):
        Q = _gptq_round_batch(weight, hessian, quantize, settings)
    return Q if batched else Q[0]


def _gptq_round_batch(weight, hessian, quantize, settings) -> torch.Tensor:
    W = weight.detach().float().clone()
    H = hessian.detach().clone()
    G, rows, d = W.shape
    diag = torch.diagonal(H, dim1=1, dim2=2)  # a view into H
    dead = diag == 0  # inputs that were always zero
    diag[dead] = 1.0
    W.masked_fill_(dead[:, None, :], 0.0)
    perm = None
    if settings.act_order:
        # Stable: inputs of equal curvature keep their order on every
        # machine.
        perm = torch.argsort(diag, dim=1, descending=True, stable=True)
        W = W.gather(2, perm[:, None, :].expand(G, rows, d))
        H = H.gather(1, perm[:, :, None].expand(G, d, d)).gather(
            2, perm[:, None, :].expand(G, d, d))
        diag = torch.diagonal(H, dim1=1, dim2=2)
    damp = settings.damp * diag.mean(1)
    eye = torch.eye(d, dtype=H.dtype, device=H.device)
    H = H + damp[:, None, None] * eye
    # Row i of U holds how the error of column i moves the columns after it.
    U = _inverse_cholesky(H).float()
    Q = torch.zeros_like(W)
    for i1 in range(0, d, settings.block_size):
        i2 = min(i1 + settings.block_size, d)
        block = W[:, :, i1:i2].clone()
        errors = torch.zeros_like(block)
        U1 = U[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = block[:, :, i]
            q = quantize(w)
            Q[:, :, i1 + i] = q
            err = (w - q) / U1[:, i, i][:, None]
            block[:, :, i:] -= err[:, :, None] * U1[:, i, i:][:, None, :]
            errors[:, :, i] = err
        W[:, :, i2:] -= errors @ U[:, i1:i2, i2:]
    if perm is not None:
        Q = Q.gather(2, torch.argsort(perm, dim=1)[:, None, :].expand(
            G, rows, d))
    return Q


def gptq_codes(layer: nn.Module, hessian: torch.Tensor,
               settings: GPTQSettings = GPTQSettings()) -> torch.Tensor:
    """Integer codes (as floats, shaped like the weight) of a quantized
    layer's weight rounded by GPTQ on its grid at its current clip(s); the
    groups of a grouped conv are rounded as one batch."""
    wq = layer.weight_quantizer
    grid, alpha = wq.grid, wq.alpha
    weight = layer.weight.detach()
    rows = weight.shape[0]
    groups = hessian.shape[0]
    flat = weight.reshape(groups, rows // groups, -1).float()
    # One clip per row [G, rows/G, 1], or the tensor's one clip.
    a = alpha.reshape(groups, rows // groups, 1) if alpha.dim() else alpha
    a_column = a[..., 0] if alpha.dim() else a

    def quantize(column: torch.Tensor) -> torch.Tensor:
        return grid.quantize(column, a_column.reshape(column.shape)
                             if alpha.dim() else a_column)

    rounded = gptq_round(flat, hessian, quantize, settings)
    return grid.to_codes(rounded, a).reshape(weight.shape)
