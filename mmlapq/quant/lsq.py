"""A learned activation step (LSQ, Esser et al., "Learned Step Size
Quantization", 2020) for one per-tensor activation quantizer.

While it is attached (``TensorQuantizer.set_learned_step``) the quantizer
computes

    q(x) = round_ste(clamp(x / s, qmin, qmax)) * s,   s = grid.step(alpha),
    alpha = alpha_0 * exp(u),

with the rounding straight-through (its gradient taken as 1). Autograd then
gives LSQ's step gradient: round(x / s) - x / s for a value inside the
clip, qmin or qmax for a clipped one; and the input gradient 1 inside the
clip, 0 outside. The forward values are those of ``Grid.quantize``.

The variable is the log of the clip's ratio to where it started, so that
one learning rate moves every clip by the same relative amount whatever its
scale. It is kept within +-``MAX_LOG_RATIO`` (a clip between 1/20 and 20
times its start) after every optimiser step (:meth:`LearnedStep.bound`),
so that a too large learning rate cannot drive a clip to zero or infinity
(a NaN loss). LSQ's gradient scale 1/sqrt(N qmax) balances step sizes under SGD;
under Adam, which divides each gradient by its running magnitude, a
constant factor cancels, so it is not applied.
"""
import torch
import torch.nn as nn

MAX_LOG_RATIO = 3.0  # exp(3) = 20: far beyond what a reconstruction moves


class LearnedStep(nn.Module):
    """The trainable clip of one per-tensor activation quantizer, started
    at its current clip."""

    @staticmethod
    def fits(quantizer: nn.Module) -> bool:
        """Whether ``quantizer`` can learn its step: per-tensor, on an
        integer grid, with a clip to start from."""
        return quantizer.channel_axis is None and \
            quantizer.grid.kind != 'midrise' and quantizer.initialized

    def __init__(self, quantizer: nn.Module):
        super().__init__()
        grid = quantizer.grid
        if grid.kind == 'midrise' or quantizer.channel_axis is not None:
            raise ValueError('a learned step needs a per-tensor quantizer on '
                             'an integer grid (signed, signed_full or '
                             f'unsigned), not {grid.kind}')
        if not quantizer.initialized:
            raise ValueError('a learned step starts from the quantizer\'s '
                             'clip: initialise the clips first')
        self.grid = grid
        self.register_buffer('alpha_start',
                             quantizer.alpha.detach().float().clone())
        self.log_ratio = nn.Parameter(torch.zeros((), device=self.alpha_start
                                                  .device))

    @torch.no_grad()
    def bound(self) -> None:
        """Project the variable back into +-MAX_LOG_RATIO (after a step);
        a non-finite one goes back to the start."""
        u = self.log_ratio
        u.copy_(torch.nan_to_num(u, nan=0.0).clamp(-MAX_LOG_RATIO,
                                                  MAX_LOG_RATIO))

    def alpha(self) -> torch.Tensor:
        return self.alpha_start * torch.exp(self.log_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self.grid.step(self.alpha()).to(x.dtype)
        scaled = torch.clamp(x / step, self.grid.qmin, self.grid.qmax)
        codes = scaled + (torch.round(scaled) - scaled).detach()
        return codes * step
