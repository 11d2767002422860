"""Learned rounding of one quantized layer's weights (AdaRound, Nagel et
al., "Up or Down? Adaptive Rounding for Post-Training Quantization", 2020).

Each weight w sits between two grid points at its layer's clip: code
floor(w / step) and the one above. A variable v per weight chooses between
them softly, through the rectified sigmoid

    h(v) = clamp(sigmoid(v) * (zeta - gamma) + gamma, 0, 1),  zeta=1.1,
    gamma=-0.1,

so the soft weight is (floor(w / step) + h(v)) * step (codes clamped to the
grid's range). v starts where h(v) equals the fractional part, i.e. at the
float weight. The regulariser sum(1 - |2 h(v) - 1|^beta), with beta
annealed from large to small, drives every h(v) to 0 or 1; the hard code is
floor + [v >= 0] (h(v) >= 1/2 exactly when v >= 0).

What a block's output error is and how it is minimised is
``lapq.reconstruction``'s business; this module only holds the variables.
"""
import math

import torch
import torch.nn as nn

ZETA, GAMMA = 1.1, -0.1


class SoftRounding(nn.Module):
    """The rounding variables of one quantized Conv2d / Linear at its
    weight quantizer's current clip(s)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        wq = layer.weight_quantizer
        if wq is None:
            raise ValueError('learned rounding needs a weight quantizer')
        self.grid = wq.grid
        weight = layer.weight.detach().float()
        alpha = wq._broadcast_alpha(weight) if wq.channel_axis is not None \
            else wq.alpha.float()
        self.register_buffer('alpha', alpha.clone())
        offset = alpha if self.grid.kind == 'midrise' else 0.0
        codes = (weight + offset) / self.grid.step(alpha)
        self.register_buffer('floor', torch.floor(codes))
        rest = (codes - self.floor).clamp(1e-4, 1 - 1e-4)
        # h(v) = rest: sigmoid(v) = (rest - gamma) / (zeta - gamma)
        p = (rest - GAMMA) / (ZETA - GAMMA)
        self.v = nn.Parameter(torch.log(p / (1 - p)))
        if self.grid.kind == 'midrise':
            self.low, self.high = 0, self.grid.num_steps
        else:
            self.low, self.high = self.grid.qmin, self.grid.qmax

    def h(self) -> torch.Tensor:
        return torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA,
                           0.0, 1.0)

    def soft_weight(self) -> torch.Tensor:
        codes = torch.clamp(self.floor + self.h(), self.low, self.high)
        return self.grid.from_codes(codes, self.alpha)

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    @torch.no_grad()
    def hard_codes(self) -> torch.Tensor:
        """The integer codes (as floats, shaped like the weight)."""
        return torch.clamp(self.floor + (self.v >= 0).float(), self.low,
                           self.high)


def beta_schedule(iteration: int, iters: int, warmup: float,
                  beta_range=(20.0, 2.0)) -> float:
    """beta at ``iteration``: 0 during the warm-up fraction (no
    regulariser), then from ``beta_range[0]`` down to ``beta_range[1]``,
    linearly over the remaining iterations."""
    start = int(math.ceil(warmup * iters))
    if iteration < start:
        return 0.0
    progress = (iteration - start) / max(1, iters - start)
    high, low = beta_range
    return low + (high - low) * max(0.0, 1.0 - progress)
