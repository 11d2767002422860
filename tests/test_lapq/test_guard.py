"""Known answers of the held-out guard's rule (lapq/guard.py): a checkpoint
replaces the start only when it lowers the held-out loss by more than z
standard errors of the paired per-image difference."""
import math

import pytest
import torch

from mmlapq.lapq.guard import choose_checkpoint, paired_difference


def image_losses(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=torch.float64) * 2


def noise(n=400, seed=1, scale=0.01):
    """Zero-mean noise (exactly), so a shift added to it is the mean."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(n, generator=g, dtype=torch.float64)
    return (e - e.mean()) * scale


def test_paired_difference_by_hand():
    a = torch.tensor([1.0, 2.0, 4.0])
    b = torch.tensor([0.0, 1.0, 1.0])  # differences 1, 1, 3
    mean, se = paired_difference(a, b)
    assert mean == pytest.approx(5 / 3)
    # sample variance of (1, 1, 3) is 4/3; se = sqrt(4/3 / 3)
    assert se == pytest.approx(math.sqrt(4 / 9))


def test_paired_difference_sums_over_processes():
    """Process 0 holds images 0..149; the all-reduce adds the sums of
    process 1's 250 (first the differences, then their squares)."""
    a, b = image_losses(seed=2), image_losses(seed=3)
    other = a[150:] - b[150:]
    from_other = [other.sum(), other.square().sum()]

    def reduce_fn(total, count):
        return total + from_other.pop(0), count + 250

    mean, se = paired_difference(a[:150], b[:150], reduce_fn)
    whole_mean, whole_se = paired_difference(a, b)
    assert mean == pytest.approx(whole_mean, rel=1e-12)
    assert se == pytest.approx(whole_se, rel=1e-9)


def test_clearly_better_end_is_kept():
    start = image_losses()
    end = start - 0.05 + noise()
    index, rule, rows = choose_checkpoint([start, end], 2.0,
                                          labels=['start', 'end'])
    assert index == 1 and rule.startswith('kept the end checkpoint')
    assert rows[1]['delta'] == pytest.approx(-0.05, abs=0.002)


def test_a_difference_inside_the_noise_keeps_the_start():
    """Lower on average, but by less than 2 standard errors."""
    start = image_losses()
    end = start - 0.0005 + noise(scale=0.05)
    mean, se = paired_difference(end, start)
    assert mean < 0 and mean > -2 * se  # the premise
    index, rule, _ = choose_checkpoint([start, end], 2.0,
                                       labels=['start', 'end'])
    assert index == 0 and rule.startswith('kept the start checkpoint')
    # With no margin the same data would keep the end.
    assert choose_checkpoint([start, end], 0.0)[0] == 1


def test_the_end_wins_over_an_earlier_checkpoint_inside_the_noise():
    start = image_losses()
    sweep = start - 0.0500 + noise(seed=4)
    end = start - 0.0495 + noise(seed=5)  # a hair worse than the sweep
    index, _, _ = choose_checkpoint([start, sweep, end], 2.0)
    assert index == 2


def test_an_earlier_checkpoint_better_beyond_the_noise_is_kept():
    start = image_losses()
    sweep = start - 0.08 + noise(seed=4)
    end = start - 0.03 + noise(seed=5)
    index, rule, _ = choose_checkpoint([start, sweep, end], 2.0,
                                       labels=['start', 'sweep 1', 'end'])
    assert index == 1
    assert 'better than the end checkpoint beyond the noise' in rule


def test_a_worse_end_falls_back_to_the_start():
    start = image_losses()
    end = start + 0.02 + noise()
    assert choose_checkpoint([start, end], 2.0)[0] == 0
