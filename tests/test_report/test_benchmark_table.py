"""The spread over calibration seeds (report/benchmark_table.py)."""
import math

import pytest

from mmlapq.report import benchmark_markdown, seed_summary


def row(method, seed, top1, loss, w=4, a=4):
    return dict(method=method, w_bits=w, a_bits=a, seed=seed, top1=top1,
                top5=99.0, calib_loss=loss, p=None, func_evals=0,
                seconds=10.0 * (seed + 1))


def test_mean_and_sample_std_by_hand():
    rows = [row('lapq', 0, 93.0, 0.13), row('lapq', 1, 93.4, 0.15),
            row('lapq', 2, 93.2, 0.14), row('max', 0, 90.0, 0.3, a=8)]
    summary = seed_summary(rows)
    lapq = summary[0]
    assert (lapq['method'], lapq['seeds']) == ('lapq', [0, 1, 2])
    assert lapq['top1_mean'] == pytest.approx(93.2)
    assert lapq['top1_std'] == pytest.approx(0.2)  # sample std, n - 1
    assert lapq['calib_loss_std'] == pytest.approx(0.01)
    assert lapq['seconds_mean'] == pytest.approx(20.0)
    assert summary[1]['top1_std'] == 0.0 and summary[1]['a_bits'] == 8


def test_markdown_gives_mean_and_std_then_every_draw():
    rows = [row('lapq', 0, 93.0, 0.13), row('lapq', 1, 93.4, 0.15)]
    rows[1].update(bops=1.0923e8, weight_bytes=1133664.0)
    env = dict(device='cpu', torch='2', mmcls='1', mmengine='0',
               mmlapq='0', date='today')
    text = benchmark_markdown(rows, dict(config='c.py', checkpoint='w.pth',
                                         calib_images=512, test_images=10000,
                                         env=env, seeds=[0, 1]),
                              seed_summary(rows))
    assert '| W4A4 | lapq | 93.20 +- 0.28 | 0.1400 +- 0.0141 | 15.0 |' \
        in text
    assert '| W4A4 | lapq | 1 | 93.40 |' in text
    assert '| 20.0 | 1.0923e+08 | 1133664 |' in text  # BOPs, weight bytes
    assert '| 10.0 | - | - |' in text  # a row without them
    assert math.isclose(0.28, math.sqrt(0.08), abs_tol=0.005)


def test_markdown_names_the_config_overrides_of_the_run():
    """A run with --cfg-options (say the LayerNorm reparameterization off)
    says so under its table's title; one without says nothing."""
    env = dict(device='cpu', torch='2', mmcls='1', mmengine='0',
               mmlapq='0', date='today')
    header = dict(config='c.py', checkpoint='w.pth', calib_images=512,
                  test_images=10000, env=env, seeds=[0])
    rows = [row('lp', 0, 89.0, 0.3)]
    plain = benchmark_markdown(rows, header)
    overridden = benchmark_markdown(rows, dict(
        header, cfg_options={'quantizer.layernorm_reparam': False}))
    assert 'cfg-options' not in plain
    assert 'config overridden with `--cfg-options ' \
        'quantizer.layernorm_reparam=False`' in overridden
