"""Histogram of |x| gathered over many batches in fixed memory.

Activation clips are searched on this histogram instead of on the raw
activations, so memory does not grow with the number of calibration images.
The range is the smallest power of two above max|x| and doubles (merging
bin pairs) whenever a later batch goes beyond it, so no value is ever clipped
away. Powers of two make the bins independent of the order of the batches:
histograms of parts of the data (one per process) merge into exactly the
histogram of the whole.

Counts are int64 on every device: ``torch.histc`` returns float32 counts,
which cannot hold odd numbers above 2^24 and, on CUDA, stop growing at 2^24
per bin (float atomics); one batch of an ImageNet VGG layer input puts far
more values than that into the zero bin.
"""
import math
from typing import Optional

import torch

from .precision import wide_dtype


# Values binned at a time: bounds the int64 index tensor (8 bytes a value).
_BIN_CHUNK = 1 << 24


def bin_counts(absx: torch.Tensor, num_bins: int,
               upper: float) -> torch.Tensor:
    """Exact int64 counts of ``absx`` (values in [0, upper]) in ``num_bins``
    equal bins, on the device of ``absx``; ``upper`` falls in the last."""
    counts = torch.zeros(num_bins, dtype=torch.int64, device=absx.device)
    scale = num_bins / upper
    for chunk in absx.split(_BIN_CHUNK):
        idx = (chunk * scale).long().clamp_(0, num_bins - 1)
        counts += torch.bincount(idx, minlength=num_bins)
    return counts


class AbsHistogram:
    """Counts of |x| in ``num_bins`` equal bins over [0, upper]."""

    def __init__(self, num_bins: int = 4096):
        if num_bins < 2 or num_bins % 2:
            raise ValueError(f'num_bins={num_bins} must be an even number >= 2')
        self.num_bins = num_bins
        self.counts = torch.zeros(num_bins, dtype=torch.int64)
        self.upper = 0.0
        self.min_value = float('inf')
        self.max_abs = 0.0
        # Exact moments for ACIQ's distribution fits.
        self.count = 0
        self.sum_abs = 0.0
        self.sum_sq = 0.0

    @classmethod
    def of(cls, x: torch.Tensor, num_bins: int = 4096) -> 'AbsHistogram':
        hist = cls(num_bins)
        hist.update(x)
        return hist

    @property
    def has_negative(self) -> bool:
        return self.min_value < 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().flatten()
        if x.numel() == 0:
            return
        absx = x.abs()
        batch_max = float(absx.max())
        self.min_value = min(self.min_value, float(x.min()))
        self.max_abs = max(self.max_abs, batch_max)
        self.count += x.numel()
        wide = x.to(wide_dtype(x.device))
        self.sum_abs += float(wide.abs().sum())
        self.sum_sq += float(wide.square().sum())
        if self.upper == 0.0:
            self.upper = 2.0**math.ceil(math.log2(batch_max)) \
                if batch_max > 0 else 2.0**-20
        while batch_max > self.upper:
            self._double_range()
        self.counts += bin_counts(absx, self.num_bins, self.upper).cpu()

    def _double_range(self) -> None:
        merged = self.counts.view(-1, 2).sum(dim=1)
        self.counts = torch.cat([merged, torch.zeros_like(merged)])
        self.upper *= 2

    def merge_(self, other: 'AbsHistogram') -> 'AbsHistogram':
        """Add ``other`` into this histogram (used to reduce across ranks)."""
        if other.count == 0:
            return self
        if self.count == 0:
            self.__dict__.update({k: (v.clone() if torch.is_tensor(v) else v)
                                  for k, v in other.__dict__.items()})
            return self
        other = other.copy()
        while other.upper > self.upper:
            self._double_range()
        while self.upper > other.upper:
            other._double_range()
        self.counts += other.counts
        self.min_value = min(self.min_value, other.min_value)
        self.max_abs = max(self.max_abs, other.max_abs)
        self.count += other.count
        self.sum_abs += other.sum_abs
        self.sum_sq += other.sum_sq
        return self

    def copy(self) -> 'AbsHistogram':
        new = AbsHistogram(self.num_bins)
        new.__dict__.update({k: (v.clone() if torch.is_tensor(v) else v)
                             for k, v in self.__dict__.items()})
        return new

    def centers(self) -> torch.Tensor:
        width = self.upper / self.num_bins
        return (torch.arange(self.num_bins, dtype=torch.float64) + 0.5) * width

    def quantile(self, q: float) -> float:
        """Value below which a fraction ``q`` of |x| lies (bin upper edge)."""
        cdf = torch.cumsum(self.counts, 0).double() / float(self.counts.sum())
        idx = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)))
        idx = min(idx, self.num_bins - 1)
        return min((idx + 1) * self.upper / self.num_bins, self.max_abs)

    def mean_abs(self) -> float:
        return self.sum_abs / max(self.count, 1)

    def rms(self) -> float:
        return (self.sum_sq / max(self.count, 1))**0.5

    def state(self) -> dict:
        return dict(counts=self.counts, upper=self.upper,
                    min_value=self.min_value, max_abs=self.max_abs,
                    count=self.count, sum_abs=self.sum_abs,
                    sum_sq=self.sum_sq)

    @classmethod
    def from_state(cls, state: dict,
                   num_bins: Optional[int] = None) -> 'AbsHistogram':
        hist = cls(num_bins or len(state['counts']))
        hist.__dict__.update(state)
        return hist
