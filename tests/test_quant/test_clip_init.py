import pytest
import torch

from mmlapq.quant import (AbsHistogram, Grid, WeightClipper, activation_clip,
                          aciq_factor, lp_clip_histogram, lp_clip_tensor)


def brute_force_lp(x, grid, p, points=1000):
    absx = x.abs()
    alphas = torch.linspace(1e-3, float(absx.max()), points)
    errs = torch.stack([(grid.quantize(absx, a) - absx).abs().pow(p).mean()
                        for a in alphas])
    return float(alphas[errs.argmin()])


def samples(dist, n=12000, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dist == 'gaussian':
        return torch.randn(n, generator=g)
    u = torch.rand(n, generator=g) - 0.5
    return -torch.sign(u) * torch.log1p(-2 * u.abs())  # Laplace(0, 1)


@pytest.mark.parametrize('dist', ['gaussian', 'laplace'])
@pytest.mark.parametrize('p', [2.0, 3.0, 4.0])
def test_lp_clip_matches_brute_force(dist, p):
    x = samples(dist)
    grid = Grid(4, 'signed')
    ours = float(lp_clip_tensor(x, grid, p))
    assert ours == pytest.approx(brute_force_lp(x, grid, p), rel=0.01)


@pytest.mark.parametrize('dist', ['gaussian', 'laplace'])
def test_histogram_lp_close_to_tensor_lp(dist):
    x = samples(dist, n=50000, seed=1)
    for grid in (Grid(4, 'signed'), Grid(3, 'midrise')):
        exact = float(lp_clip_tensor(x, grid, 2.5))
        hist = AbsHistogram(2048)
        for chunk in x.split(7000):  # range doubles as larger values arrive
            hist.update(chunk)
        assert lp_clip_histogram(hist, grid, 2.5) == pytest.approx(
            exact, rel=0.02)


def test_histogram_keeps_every_value_while_range_grows():
    hist = AbsHistogram(16)
    hist.update(torch.tensor([0.5, 1.0]))
    hist.update(torch.tensor([-7.0]))
    assert hist.counts.sum() == 3 and hist.upper >= 7 and hist.has_negative
    assert hist.max_abs == 7.0


def test_lp_gets_smaller_clips_for_fewer_bits_and_larger_p():
    x = samples('gaussian')
    c2 = float(lp_clip_tensor(x, Grid(2), 2.0))
    c4 = float(lp_clip_tensor(x, Grid(4), 2.0))
    c4p4 = float(lp_clip_tensor(x, Grid(4), 4.0))
    assert c2 < c4 < c4p4 < float(x.abs().max())


def test_aciq_factors_match_banner_et_al():
    # Published optimal alpha/b (Laplace) and alpha/sigma (Gaussian) for
    # M bits with 2^M bins over [-alpha, alpha].
    assert aciq_factor('laplace', 2**2, True) == pytest.approx(2.83, abs=0.01)
    assert aciq_factor('laplace', 2**4, True) == pytest.approx(5.03, abs=0.01)
    assert aciq_factor('laplace', 2**8, True) == pytest.approx(9.89, abs=0.01)
    assert aciq_factor('gaussian', 2**4, True) == pytest.approx(2.55, abs=0.01)
    assert aciq_factor('gaussian', 2**8, True) == pytest.approx(3.92, abs=0.01)


def test_activation_clip_methods():
    x = samples('laplace', n=50000).abs()
    hist = AbsHistogram.of(x)
    grid = Grid(4, 'unsigned')
    assert activation_clip(hist, grid, 'max') == pytest.approx(float(x.max()))
    pct = activation_clip(hist, grid, 'percentile', percentile=99.0)
    assert pct == pytest.approx(float(x.quantile(0.99)), rel=0.01)
    aciq = activation_clip(hist, grid, 'aciq')
    assert 0 < aciq < float(x.max())
    with pytest.raises(ValueError, match='init method'):
        activation_clip(hist, grid, 'kl')


def test_weight_clipper_per_channel_and_large_tensor():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3) * torch.arange(1, 9).view(8, 1, 1, 1)
    clips = WeightClipper(w, per_channel=True).clip(Grid(4), 'lp', 2.0)
    assert clips.shape == (8, ) and float(clips[7]) > 3 * float(clips[0])
    for c in (0, 7):
        assert float(clips[c]) == pytest.approx(
            float(lp_clip_tensor(w[c], Grid(4), 2.0)), rel=1e-4)
    big = torch.randn(300, 300)  # > 2^16 elements: searched on a histogram
    clipper = WeightClipper(big)
    assert clipper.hist is not None
    assert float(clipper.clip(Grid(4), 'lp', 3.0)) == pytest.approx(
        float(lp_clip_tensor(big, Grid(4), 3.0)), rel=0.01)


def test_histogram_counts_are_exact_beyond_2_pow_24_in_one_bin():
    """float32 counts (torch.histc) cannot hold 2^24 + 1; CUDA's float
    atomics stop at 2^24. The zero bin of a ReLU output gets that many."""
    n = (1 << 24) + 3
    x = torch.zeros(n)
    x[:2] = 1.0  # the range is [0, 1]
    hist = AbsHistogram.of(x, num_bins=8)
    assert hist.counts.dtype == torch.int64
    assert int(hist.counts[0]) == n - 2 and int(hist.counts[-1]) == 2
    hist.update(torch.zeros(5))
    assert int(hist.counts.sum()) == n + 5 == hist.count
    assert hist.quantile(0.5) == pytest.approx(1 / 8)  # first bin's edge


def test_histogram_bins_match_histc_where_histc_is_exact():
    x = torch.rand(10000) * 3
    hist = AbsHistogram.of(x, num_bins=64)
    ref = torch.histc(x, bins=64, min=0, max=hist.upper)
    assert torch.equal(hist.counts, ref.long())
