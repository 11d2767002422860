"""Mixed precision through a run (issue 29), in-process on the toy
classifier of depth 4: the allocation stays within its budget, every layer
runs at its chosen widths, the report and heatmap say so, the quantized
checkpoint stores each tensor at its own width and reloads bit for bit, and
a budget that cannot be met fails before any work."""
import json
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner
from test_hooks import reload_and_compare, run
from toy_runner import toy_config

import mmlapq  # noqa: F401
from mmlapq.engine import LAPQError
from mmlapq.engine.run_state import unwrap
from mmlapq.quant import quant_layers

MIXED = dict(budget=dict(bops_of='w3a3'), w_candidates=[2, 3, 4, 8],
             a_candidates=[4, 8], check_pairs=4)


def mixed_config(work_dir, **mixed):
    cfg = toy_config(work_dir)
    cfg.model.backbone.depth = 4
    cfg.quantizer.mixed = dict(MIXED, **mixed)
    return cfg


@pytest.fixture(scope='module')
def mixed_run(tmp_path_factory):
    return run(mixed_config(str(tmp_path_factory.mktemp('mixed'))))


def test_the_allocation_fits_the_budget_and_the_model_follows_it(mixed_run):
    runner, _ = mixed_run
    report = json.load(open(osp.join(runner.work_dir, 'lapq_report.json')))
    mixed = report['mixed']
    assert mixed['used'] <= mixed['budget']
    assert mixed['budget'] == sum(
        r['macs'] * (3 if r['free_w'] else 8) * (3 if r['free_a'] else 8)
        for r in mixed['layers'])
    free = [r for r in mixed['layers'] if r['free_w']]
    assert [r['name'] for r in free] == [
        'backbone.layers.3', 'backbone.layers.5', 'backbone.layers.7']
    layers = quant_layers(unwrap(runner.model))
    for row in mixed['layers']:
        layer = layers[row['name']]
        assert layer.weight_quantizer.bits == row['w_bits']
        quantizer = layer.input_grid_quantizer()
        assert quantizer.bits == row['a_bits']
    # the budget's uniform width is a candidate too (inputs at 3 bits)
    assert mixed['settings']['a_candidates'] == [3, 4, 8]
    chosen = {r['name'] for r in mixed['layers']}
    assert {r['name']: (r['w_bits'], r['a_bits'])
            for r in report['layers'] if r['name'] in chosen} == {
                r['name']: (r['w_bits'], r['a_bits'])
                for r in mixed['layers']}
    sensitivity = mixed['sensitivity']['increase']
    assert set(sensitivity) == {r['name'] for r in free}
    assert set(sensitivity['backbone.layers.3']['weight']) == {
        '2', '3', '4', '8'}
    assert set(sensitivity['backbone.layers.3']['input']) == {'3', '4', '8'}
    assert mixed['check']['measured_loss'] > 0
    assert len(mixed['check']['pairs']) <= 4
    text = open(osp.join(runner.work_dir, 'lapq_report.md')).read()
    assert '# LAPQ report: mixed precision, bops_of' in text
    assert '## Mixed precision' in text
    assert osp.getsize(osp.join(runner.work_dir, 'plots',
                                'sensitivity.png')) > 0


def test_each_tensor_is_stored_and_reloaded_at_its_own_width(mixed_run,
                                                            tmp_path):
    runner, metrics = mixed_run
    ckpt = torch.load(osp.join(runner.work_dir, 'lapq_quantized.pth'),
                      weights_only=True)
    stored = {n: p['bits'] for n, p in ckpt['meta']['lapq']['weights'].items()}
    widths = {n: m.weight_quantizer.bits
              for n, m in quant_layers(unwrap(runner.model)).items()
              if m.weight_quantizer is not None}
    assert stored == widths and len(set(widths.values())) > 1
    # a config without the mixed settings rebuilds the allocation from
    # the file, and computes what the run computed, to the bit
    cfg = mixed_config(str(tmp_path))
    del cfg.quantizer['mixed']
    reload_and_compare(runner, metrics, tmp_path, cfg)


def test_a_budget_that_cannot_be_met_fails_before_any_work(tmp_path):
    from mmlapq.engine.launch import quantize_from_config
    cfg = mixed_config(str(tmp_path / 'wd'), budget=dict(bops=1e4))
    model = Runner.from_cfg(toy_config(str(tmp_path / 'float'))).model
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'float.pth')
    cfg.load_from = str(tmp_path / 'float.pth')
    cfg.model.backbone.depth = 2
    cfg.launcher = 'none'
    with pytest.raises(LAPQError, match='is below .* what the smallest '
                       'candidate widths cost') as info:
        quantize_from_config(cfg)
    assert '\n' not in str(info.value)
    assert not osp.exists(tmp_path / 'wd')
