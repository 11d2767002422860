"""Layer-wise clip initialisers: max, Lp, ACIQ and percentile.

Every initialiser returns a clip ``alpha`` for a given grid. Weights are read
from the tensor itself (exactly for small tensors, through a fine histogram of
|w| for large ones); activations from an :class:`AbsHistogram` gathered over
the calibration set.
"""
import math
from functools import lru_cache
from typing import Callable, Optional, TypeVar

import torch
from scipy import optimize, special

from .grids import Grid
from .histogram import AbsHistogram
from .precision import wide_dtype

INIT_METHODS = ('max', 'lp', 'aciq', 'percentile')
ACIQ_DISTRIBUTIONS = ('laplace', 'gaussian')
T = TypeVar('T')
# Weight tensors with more elements than this are searched on a histogram of
# |w| (2^14 bins) built once, which makes the p sweep cheap on VGG's FC layers.
EXACT_SEARCH_MAX_NUMEL = 1 << 16
WEIGHT_HIST_BINS = 1 << 14
_COARSE, _FINE = 128, 64
_CHUNK_ELEMENTS = 1 << 22


def lp_errors(values: torch.Tensor, counts: Optional[torch.Tensor],
              grid: Grid, alphas: torch.Tensor, p: float) -> torch.Tensor:
    """Mean |Q(v) - v|^p for each candidate clip.

    values: [C, N] magnitudes (|x|, or histogram bin centres), C channels.
    counts: [C, N] weights of the values, or None for all ones.
    alphas: [G, C] candidate clips. Returns [G, C].
    """
    num_g, num_c = alphas.shape
    total = values.shape[1] if counts is None else counts.sum(1)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, values.numel()))
    out = []
    for start in range(0, num_g, chunk):
        a = alphas[start:start + chunk].unsqueeze(-1)  # [g, C, 1]
        err = (grid.quantize(values.unsqueeze(0), a) - values).abs_().pow_(p)
        if counts is not None:
            err = err * counts
        out.append(err.sum(-1, dtype=wide_dtype(err.device)) / total)
    return torch.cat(out)


def search_lp_clip(values: torch.Tensor, counts: Optional[torch.Tensor],
                   grid: Grid, p: float) -> torch.Tensor:
    """Clip per channel minimising the Lp error: a coarse scan of (0, max],
    then a fine scan between the best coarse point's neighbours. Returns [C].
    """
    if p < 1:
        raise ValueError(f'p={p} is not supported: the Lp norm needs p >= 1')
    if counts is None:
        upper = values.max(dim=1).values
    else:
        nonzero = counts > 0
        upper = torch.where(nonzero, values, torch.zeros_like(values)).max(1).values
    upper = upper.clamp_min(1e-12).to(values.dtype)
    frac = torch.arange(1, _COARSE + 1, dtype=values.dtype,
                        device=values.device) / _COARSE
    coarse = frac[:, None] * upper[None, :]  # [G, C]
    best = lp_errors(values, counts, grid, coarse, p).argmin(0)  # [C]
    lo = coarse.gather(0, (best - 1).clamp_min(0)[None])[0]
    lo = torch.where(best == 0, upper / (4 * _COARSE), lo)
    hi = coarse.gather(0, (best + 1).clamp_max(_COARSE - 1)[None])[0]
    t = torch.linspace(0, 1, _FINE, dtype=values.dtype,
                       device=values.device)[:, None]
    fine = lo[None] + t * (hi - lo)[None]
    idx = lp_errors(values, counts, grid, fine, p).argmin(0)
    return fine.gather(0, idx[None])[0]


def lp_clip_histogram(hist: AbsHistogram, grid: Grid, p: float) -> float:
    """Lp-optimal clip for the values summarised by ``hist``."""
    centers = hist.centers()[None]
    counts = hist.counts[None]
    return float(search_lp_clip(centers, counts, grid, p)[0])


def lp_clip_tensor(x: torch.Tensor, grid: Grid, p: float,
                   per_channel: bool = False) -> torch.Tensor:
    """Lp-optimal clip of a tensor: a scalar tensor, or one per channel
    (dim 0) when ``per_channel``. Exact on the values of the tensor."""
    x = x.detach().float()
    values = x.abs().reshape(x.shape[0], -1) if per_channel \
        else x.abs().reshape(1, -1)
    clips = search_lp_clip(values, None, grid, p)
    return clips if per_channel else clips[0]


@lru_cache(maxsize=None)
def aciq_factor(distribution: str, num_steps: int, two_sided: bool) -> float:
    """alpha / scale minimising ACIQ's analytic MSE (Banner et al.).

    scale is b (mean |x|) for Laplace and sigma (rms) for Gaussian; the MSE is
    the clipping noise of the tails plus step^2 / 12 with step = range /
    num_steps, range = 2 alpha (two-sided grid) or alpha (unsigned grid).
    """
    if distribution not in ACIQ_DISTRIBUTIONS:
        raise ValueError(f'ACIQ distribution {distribution!r} is unknown: use '
                         f'one of {", ".join(ACIQ_DISTRIBUTIONS)}')
    span = 2.0 if two_sided else 1.0

    def mse(a: float) -> float:
        if distribution == 'laplace':  # b = 1
            clip_noise = 2.0 * math.exp(-a)
        else:  # sigma = 1
            clip_noise = ((a * a + 1) * special.erfc(a / math.sqrt(2))
                          - a * math.sqrt(2 / math.pi) * math.exp(-a * a / 2))
        return clip_noise + (span * a / num_steps)**2 / 12

    res = optimize.minimize_scalar(mse, bounds=(1e-3, 40.0), method='bounded',
                                   options=dict(xatol=1e-6))
    return float(res.x)


def aciq_clip(mean_abs: torch.Tensor, rms: torch.Tensor, grid: Grid,
              distribution: str = 'laplace') -> torch.Tensor:
    """ACIQ clip from the fitted scale (mean |x| or rms), clamped to > 0."""
    factor = aciq_factor(distribution, grid.num_steps, grid.two_sided)
    scale = mean_abs if distribution == 'laplace' else rms
    return (factor * scale).clamp_min(1e-12)


def clip_by_method(method: str, **compute: Callable[[], T]) -> T:
    """``compute[method]()``: the one place that maps an init method name
    (one of INIT_METHODS) to how a clip is computed, for activations and
    weights alike."""
    if method not in compute:
        raise ValueError(f'init method {method!r} is unknown: use one of '
                         f'{", ".join(INIT_METHODS)}')
    return compute[method]()


def activation_clip(hist: AbsHistogram, grid: Grid, method: str,
                    p: float = 2.0, percentile: float = 99.99,
                    distribution: str = 'laplace') -> float:
    """Clip of one activation from its calibration histogram."""
    if hist.count == 0:
        raise RuntimeError('no calibration values reached this activation')
    if hist.max_abs == 0:
        return 1e-8  # an all-zero input: any clip quantizes it exactly

    def aciq() -> float:
        clip = aciq_clip(torch.tensor(hist.mean_abs()),
                         torch.tensor(hist.rms()), grid, distribution)
        return min(float(clip), hist.max_abs)

    return clip_by_method(
        method, max=lambda: hist.max_abs,
        lp=lambda: lp_clip_histogram(hist, grid, p), aciq=aciq,
        percentile=lambda: hist.quantile(percentile / 100.0))


class WeightClipper:
    """Clips of one weight tensor for any method and p.

    What does not depend on p (|w| per channel, or the fine histogram of a
    large tensor) is computed once, so a p sweep costs only the searches.
    """

    def __init__(self, weight: torch.Tensor, per_channel: bool = False):
        w = weight.detach().float()
        self.per_channel = per_channel
        self.absw = w.abs().reshape(w.shape[0] if per_channel else 1, -1)
        self.hist = None
        if not per_channel and w.numel() > EXACT_SEARCH_MAX_NUMEL:
            self.hist = AbsHistogram.of(w, WEIGHT_HIST_BINS)

    def _scalar(self, clip: float) -> torch.Tensor:
        return torch.tensor(clip, device=self.absw.device)

    def _out(self, clips: torch.Tensor) -> torch.Tensor:
        clips = clips.float().clamp_min(1e-12)
        return clips if self.per_channel else clips[0]

    def clip(self, grid: Grid, method: str, p: float = 2.0,
             percentile: float = 99.99,
             distribution: str = 'laplace') -> torch.Tensor:
        absw = self.absw

        def lp() -> torch.Tensor:
            if self.hist is not None:
                return self._scalar(lp_clip_histogram(self.hist, grid, p))
            return self._out(search_lp_clip(absw, None, grid, p))

        def aciq() -> torch.Tensor:
            wide = absw.to(wide_dtype(absw.device))
            mean_abs, rms = wide.mean(1), wide.square().mean(1).sqrt()
            clip = aciq_clip(mean_abs, rms, grid, distribution)
            return self._out(torch.minimum(clip, wide.max(1).values))

        def percentile_clip() -> torch.Tensor:
            if self.hist is not None:
                return self._scalar(self.hist.quantile(percentile / 100.0))
            return self._out(_quantile_rows(absw, percentile / 100.0))

        return clip_by_method(
            method, max=lambda: self._out(absw.max(1).values), lp=lp,
            aciq=aciq, percentile=percentile_clip)


# torch.quantile refuses inputs of more than 2^24 elements.
_QUANTILE_MAX_NUMEL = 1 << 24


def _quantile_rows(x: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of each row (the next value up between two)."""
    rows = max(1, _QUANTILE_MAX_NUMEL // max(1, x.shape[1]))
    return torch.cat([torch.quantile(part, q, dim=1, interpolation='higher')
                      for part in x.split(rows)])
