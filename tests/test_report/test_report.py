"""The report's tables, markdown and plots from a hand-made report."""
import os

import pytest

from mmlapq.report import (benchmark_markdown, plot_p_sweep, plot_search,
                           summary_table, write_markdown)

ENV = dict(torch='2', mmcls='1', mmengine='0.10', mmlapq='0.1',
           device='cpu', date='2026-11-28')


def report():
    layer = dict(name='conv', type='Conv2d', w_bits=4, a_bits=4,
                 w_clip=0.5, a_clip=[1.0, 2.0], w_clip_init=0.6,
                 a_clip_init=[1.5, 2.5], w_grid='signed', a_grid='unsigned')
    return dict(
        config='c.py', checkpoint='w.pth',
        fp32=dict(top1=93.42, calib_loss=0.13),
        init=dict(method='lp', p=3.33, top1=92.93, calib_loss=0.14,
                  seconds=30.0),
        lapq=dict(method='powell', calib_loss=0.1364, func_evals=97,
                  seconds=99.3, holdout_init_loss=0.17,
                  holdout_loss=0.172, stopped='maxiter', ms_per_eval=900.0,
                  guard='fell back to the init'),
        quantized=dict(top1=93.07),
        settings=dict(quant=dict(w_bits=4, a_bits=4, fold_bn=True,
                                 bias_correction='empirical',
                                 first_last='8bit'),
                      rounding=dict(method='gptq')),
        calibration=dict(num_images=512, source='training split', seed=0,
                         holdout_images=128),
        layers=[layer], env=ENV)


def test_summary_table_rows():
    lines = summary_table(report()).splitlines()
    assert lines[2] == '| FP32 | 93.42 | 0.1300 | - | - | - |'
    assert lines[3] == ('| lp init (p=3.33) | 92.93 | 0.1400 | 0.1700 | - '
                        '| 30.0 |')
    assert lines[4] == ('| LAPQ (powell + gptq) | 93.07 | 0.1364 | 0.1720 '
                        '| 97 | 99.3 |')


def test_held_out_loss_after_a_rounding_before_the_search_is_its_own():
    """When GPTQ/QDrop ran before the search, the guard's first held-out
    loss is measured after it: it stands on the rounding's row, with the
    rounding's calibration loss, not on the init's."""
    rounded = report()
    rounded['settings']['rounding'] = dict(method='adaround')
    rounded = dict(rounded, rounding=dict(method='adaround',
                                           order='before_search',
                                           loss_before=0.14,
                                           loss_after=0.135),
                   seconds=dict(rounding=12.5))
    lines = summary_table(rounded).splitlines()
    assert lines[3] == '| lp init (p=3.33) | 92.93 | 0.1400 | - | - | 30.0 |'
    assert lines[4] == ('| adaround rounding (before search) | - | 0.1350 '
                        '| 0.1700 | - | 12.5 |')
    assert lines[5].startswith('| LAPQ (powell + adaround) | 93.07 |')


def test_markdown_has_the_table_layers_and_guard(tmp_path):
    path = str(tmp_path / 'r.md')
    write_markdown(report(), path)
    text = open(path).read()
    assert text.startswith('# LAPQ report: W4A4')
    assert '| conv | Conv2d | 4 | 4 | 0.6000 -> 0.5000 | per-channel (2) ' \
        '-> per-channel (2) |' in text
    assert "held-out images for the search's guard: fell back" in text
    assert os.listdir(tmp_path) == ['r.md']


def test_markdown_says_an_interrupted_or_resumed_run(tmp_path):
    path = str(tmp_path / 'r.md')
    write_markdown(dict(report(), interrupted='SIGTERM'), path)
    assert '**Interrupted (SIGTERM)**' in open(path).read()
    write_markdown(dict(report(), resumed=True), path)
    text = open(path).read()
    assert 'Resumed from the search state' in text
    assert 'Interrupted' not in text


def test_benchmark_table():
    rows = [dict(method='fp32', w_bits=32, a_bits=32, top1=93.42,
                 top5=99.93, calib_loss=None, func_evals=0, seconds=0.0),
            dict(method='lapq', w_bits=4, a_bits=4, top1=93.1, top5=None,
                 calib_loss=0.13642, p=3.333, func_evals=97, seconds=99.31)]
    text = benchmark_markdown(rows, dict(config='c.py', checkpoint='w.pth',
                                         calib_images=512, test_images=10000,
                                         env=ENV))
    assert '| FP32 | fp32 | 93.42 | 99.93 | - | - | 0 | 0.0 |' in text
    assert '| W4A4 | lapq | 93.10 | - | 0.1364 | 3.33 | 97 | 99.3 |' in text


@pytest.mark.parametrize('fmt', ['png', 'svg'])
def test_plots_are_written(tmp_path, fmt):
    sweep = dict(ps=[2.0, 3.0, 4.0], losses=[0.2, 0.1, 0.15],
                 parabola=[0.075, -0.475, 0.85], p_star=3.2)
    path = plot_p_sweep(sweep, str(tmp_path / f'p.{fmt}'))
    assert os.path.getsize(path) > 1000
    assert plot_search([], str(tmp_path / 'none.png')) is None
    assert plot_search([0.3, 0.2, 0.25], str(tmp_path / f's.{fmt}'))
    assert sorted(os.listdir(tmp_path)) == [f'p.{fmt}', f's.{fmt}']


def test_mixed_precision_section_heatmap_and_pareto_plots(tmp_path):
    """The report's mixed-precision section names the budget, what was
    used and each layer's choice; the heatmap and the Pareto plots are
    written (None when there is nothing to plot)."""
    from mmlapq.report.plots import plot_pareto, plot_sensitivity
    from mmlapq.report.report import mixed_lines
    mixed = dict(
        settings=dict(budget=dict(bops_of='w4a4')), kind='bops_of',
        unit='BOPs', budget=1000.0, used=990.0, minimum=500.0,
        uniform={'w4a4': 1000.0},
        check=dict(base_loss=0.1, predicted_loss=0.2, measured_loss=0.25,
                   pairs=[], pair_spearman=float('nan')),
        sensitivity=dict(probes=2, seconds=1.0, increase={
            'conv': {'weight': {'2': 0.5, '8': 0.0},
                     'input': {'4': 0.01, '8': 0.0}}}),
        layers=[dict(name='conv', macs=10, w_bits=8, a_bits=4),
                dict(name='fc', macs=2, w_bits=8, a_bits=8)])
    text = '\n'.join(mixed_lines(mixed))
    assert ("used 990, measured on the quantized model's layers "
            '(smallest possible 500') in text
    assert '| conv | 10 | W8A4 | 5.00e-01 | 0.00e+00 | 1.00e-02 |' in text
    assert '| fc | 2 | W8A8 | - | - | - | - |' in text
    assert mixed_lines(None) == []
    assert plot_sensitivity(mixed, str(tmp_path / 's.png'))
    assert plot_sensitivity(None, str(tmp_path / 'n.png')) is None
    rows = [dict(method='fp32', w_bits=32, a_bits=32, top1=92.0)] + [
        dict(method=m, w_bits=w, a_bits=a, top1=t + s, seed=s,
             bops=b, weight_bytes=b / 10)
        for m, w, a, t, b in [('config', 4, 4, 90.0, 1e8),
                              ('config', 3, 3, 87.0, 6e7),
                              ('lapq_mixed', 4, 4, 90.5, 1e8)]
        for s in (0, 1)]
    for cost in ('bops', 'weight_bytes'):
        # a folder of its own, made by the plot (the benchmark's plots/
        # holds nothing else when no run was plotted before)
        path = str(tmp_path / 'plots' / f'{cost}.svg')
        assert os.path.getsize(plot_pareto(rows, path, cost)) > 0
    assert plot_pareto(rows[:1], str(tmp_path / 'none.svg')) is None


def test_reconstruction_section():
    from mmlapq.report.report import reconstruction_lines
    rounding = dict(
        method='adaround',
        act_steps_guard=dict(why='kept the learned activation steps: ...'),
        guard=dict(why='kept the QDrop rounding: ...'),
        reconstruction=dict(blocks=[
            dict(steps=[0, 3], layers=2, error_nearest=2.0, error=1.0,
                 inputs_only=0.25,
                 weights_only=[0.5, 0.4], activations_only=[1.5, 0.75],
                 act_clip_ratios=[0.9, 1.1]),
            dict(steps=[3, 4], layers=0, error_nearest=0.1, error=0.1,
                 weights_only=[0.0, 0.0], activations_only=[0.1, 0.1])]))
    lines = reconstruction_lines(rounding)
    assert lines[0] == '## Block reconstruction'
    assert 'Guard: kept the learned activation steps: ....' in lines
    assert '| 0..2 | 2 | 2 -> 1 | 0.25 | 0.5 -> 0.4 | 1.5 -> 0.75 | 0.900, ' \
        '1.100 |' in lines
    assert '| 3..3 | 0 | 0.1 -> 0.1 | - | 0 -> 0 | 0.1 -> 0.1 | - |' in lines
    assert reconstruction_lines(dict(method='gptq')) == []
    assert reconstruction_lines(None) == []
