"""LayerNorm reparameterization (RepQ-ViT, Li et al. 2023), on a float
model, before it is wrapped: the transformer's equalization, as
``equalize.py`` is the conv pairs'.

A LayerNorm's output feeds a Linear layer (a ViT's ``qkv`` and ``fc1``),
and its channels differ in range by one to two orders of magnitude: one
per-tensor step spends most of a 4-bit grid on the widest. With the
output's per-channel center m_c and half-range h_c on the calibration
images, and a per-channel scale s_c, write the output y as

    y_c = s_c y'_c + m_c,   y'_c = (gamma_c / s_c) xhat_c + (beta_c - m_c) / s_c

so LayerNorm computes y' with gamma' = gamma / s and beta' = (beta - m) / s,
and the Linear W y + b = (W diag(s)) y' + (W m + b) takes the scale into
its weight's columns and the center into its bias. Exact in float. Each
channel of y' is centered on 0 with half-range h_c / s_c:

- ``alpha=1`` (RepQ-ViT): s_c = h_c / mean(h): every channel of y' has the
  same range, and the Linear's weight columns take the spread;
- ``alpha<1`` (SmoothQuant's balance): s_c = h_c^alpha / w_c^(1-alpha),
  w_c the largest |weight| of input channel c over the layers that read
  it, normalised to geometric mean 1: part of the spread stays in the
  activations, part goes to the weights.

Pairs come from the model's own forward: a Linear whose input is the very
tensor a LayerNorm returned (the calibration run's hooks see both). The
model's output on those images is compared before and after; a mismatch
(something else reads the LayerNorm's output) undoes every change and is
an error.
"""
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.nn as nn

from .grids import check_type, settings_from_option


@dataclass
class LayerNormSettings:
    """``quantizer.layernorm_reparam``."""

    alpha: float = 1.0   # 1: ranges only (RepQ-ViT); < 1: SmoothQuant
    rtol: float = 1e-4   # the output check, relative to its largest logit

    def __post_init__(self):
        check_type('layernorm_reparam.alpha', self.alpha, float)
        check_type('layernorm_reparam.rtol', self.rtol, float)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f'layernorm_reparam.alpha={self.alpha} must be '
                             'in [0, 1]')

    @classmethod
    def from_option(cls, option: Union[bool, dict, None]
                    ) -> Optional['LayerNormSettings']:
        """False/None: off, True: defaults, a dict: these fields."""
        return settings_from_option(cls, option, 'layernorm_reparam',
                                    'alpha, rtol')


class _Stats:
    """Per-channel minimum and maximum of one LayerNorm's outputs, and the
    Linear layers that read them."""

    def __init__(self):
        self.low = self.high = None
        self.readers: List[nn.Linear] = []


def _observe(model: nn.Module, run: Callable[[], List[torch.Tensor]]):
    """Run the calibration forward with hooks; each affine LayerNorm's
    statistics, and the model's outputs."""
    stats: Dict[nn.LayerNorm, _Stats] = {}
    produced: Dict[int, nn.LayerNorm] = {}
    handles = []

    def after_norm(norm, args, out):
        s = stats[norm]
        flat = out.detach().reshape(-1, out.shape[-1])
        low, high = flat.amin(0), flat.amax(0)
        s.low = low if s.low is None else torch.minimum(s.low, low)
        s.high = high if s.high is None else torch.maximum(s.high, high)
        # a weak reference: an id alone may be reused by a later tensor
        produced[id(out)] = (norm, weakref.ref(out))

    def before_linear(linear, args):
        norm, ref = produced.get(id(args[0]), (None, None))
        if norm is not None and ref() is args[0] and \
                linear not in stats[norm].readers:
            stats[norm].readers.append(linear)

    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine \
                and len(module.normalized_shape) == 1:
            stats[module] = _Stats()
            handles.append(module.register_forward_hook(after_norm))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_pre_hook(before_linear))
    try:
        with torch.no_grad():
            outputs = run()
    finally:
        for h in handles:
            h.remove()
    return {n: s for n, s in stats.items() if s.readers}, outputs


def _scales(s: _Stats, alpha: float) -> torch.Tensor:
    half = ((s.high - s.low) / 2).clamp_min(1e-8)  # per-channel half-range
    if alpha >= 1.0:
        scale = half / half.mean()
    else:
        w = torch.stack([r.weight.detach().abs().amax(0)
                         for r in s.readers]).amax(0).clamp_min(1e-8)
        scale = half.pow(alpha) / w.pow(1 - alpha)
        scale = scale / scale.log().mean().exp()
    return scale


def reparameterize_layernorms(model: nn.Module,
                              run: Callable[[], List[torch.Tensor]],
                              settings: LayerNormSettings = LayerNormSettings()
                              ) -> dict:
    """Fold each LayerNorm's per-channel output ranges into its affine and
    the Linear layers that read it, in place (see the module doc).
    ``run()`` runs the calibration images through the model and returns
    its outputs. Returns the record: per LayerNorm, its readers and the
    ratio of its widest to its narrowest channel before and after."""
    names = {m: n for n, m in model.named_modules()}
    stats, before = _observe(model, run)
    saved = {m: (m.weight.detach().clone(), None if m.bias is None else
                 m.bias.detach().clone())
             for s in stats for m in [s] + stats[s].readers}
    record = []
    with torch.no_grad():
        for norm, s in stats.items():
            scale = _scales(s, settings.alpha)
            center = (s.high + s.low) / 2
            if any(r.bias is None for r in s.readers):
                # no bias to take the center (a new one would not load
                # into the float model): scales only
                center = torch.zeros_like(center)
            half = torch.maximum(s.high - center, center - s.low)
            norm.weight.div_(scale)
            norm.bias.sub_(center).div_(scale)
            for linear in s.readers:
                if linear.bias is not None:
                    linear.bias.add_(linear.weight @ center)
                linear.weight.mul_(scale)
            after = half / scale
            record.append(dict(
                norm=names[norm], readers=[names[r] for r in s.readers],
                spread_before=float(half.max() / half.clamp_min(1e-8).min()),
                spread_after=float(after.max() / after.clamp_min(1e-8)
                                   .min())))
        after_outputs = run()
    worst = max((float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                 for a, b in zip(after_outputs, before)), default=0.0)
    if worst > settings.rtol:
        with torch.no_grad():
            for module, (weight, bias) in saved.items():
                module.weight.copy_(weight)
                if bias is not None:
                    module.bias.copy_(bias)
        raise ValueError(
            'the LayerNorm reparameterization changed the model\'s output '
            f'by {worst:.2g} of its largest value (something other than '
            'the Linear layers reads a LayerNorm\'s output): quantize '
            'without quantizer.layernorm_reparam')
    return dict(alpha=settings.alpha, layernorms=record,
                max_output_change=worst)
