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
from mmlapq.engine.run_state import quantizer_of, unwrap
from mmlapq.quant import quant_layers
from mmlapq.quant.running import running_widths

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


def test_mixed_precision_refuses_quantized_attention_products():
    """The allocation and its BOPs cover Conv2d and Linear layers: on a ViT
    the attention products would run at widths outside them."""
    from test_quant.test_attention import vit

    from mmlapq.registry import MODELS as LAPQ_MODELS
    model = vit()
    quantizer = LAPQ_MODELS.build(dict(
        type='mmlapq.LAPQQuantizer', mixed=dict(budget=dict(bops_of='w4a4'))))
    with pytest.raises(LAPQError, match='attention_matmuls=False') as info:
        quantizer.check_mixed(model, torch.randn(2, 3, 32, 32))
    assert '\n' not in str(info.value)
    quantizer = LAPQ_MODELS.build(dict(
        type='mmlapq.LAPQQuantizer', attention_matmuls=False,
        mixed=dict(budget=dict(bops_of='w4a4'))))
    quantizer.check_mixed(model, torch.randn(2, 3, 32, 32))  # no error


# Residual models (random ImageNet weights at 32 px, test_chain's): a
# ResNet-18 with downsample blocks and a user's override, a MobileNetV2.
USER_OVERRIDE = {'backbone.layer2.0.conv2': dict(a_bits=8)}


def quantize_mixed(config, overrides=None, **mixed):
    from test_lapq.test_chain import random_imagenet_model
    from mmlapq.lapq import CalibrationSet
    from mmlapq.registry import MODELS as LAPQ_MODELS
    model, inputs, labels = random_imagenet_model(config, 32)
    quantizer = LAPQ_MODELS.build(dict(
        type='mmlapq.LAPQQuantizer', overrides=dict(overrides or {}),
        mixed=dict(dict(budget=dict(bops_of='w4a4'), check_pairs=6,
                        w_candidates=(2, 4), a_candidates=(4, 8)), **mixed),
        init=dict(method='max', mode='independent'),
        search=dict(method='none'),
        rounding=dict(method='nearest'), calib=dict(holdout_images=0)))
    quantizer.quantize(model, CalibrationSet(inputs, labels))
    return model, quantizer, inputs[0]


def assert_runs_as_reported(model, quantizer, probe):
    """The widths each layer runs at are the allocation's, and the
    report's used BOPs, measured on the model, fit the budget."""
    from mmlapq.lapq.allocation import within_budget
    from mmlapq.lapq.mixed import layer_macs, model_costs
    from mmlapq.quant.running import running_widths
    record = quantizer.state.mixed
    widths = running_widths(model)
    for row in record['layers']:
        assert widths[row['name']] == (row['w_bits'], row['a_bits']), row
    macs = {r['name']: r['macs'] for r in record['layers']}
    assert macs == layer_macs(model, probe)
    assert record['used'] == pytest.approx(model_costs(model, macs)['bops'],
                                           rel=1e-12)
    assert within_budget(record['used'], record['budget'])
    return record, widths


@pytest.mark.parametrize('config, overrides', [
    ('resnet18_w4a4', USER_OVERRIDE), ('mobilenet-v2_w4a4', None)])
def test_residual_models_run_what_the_report_says(config, overrides):
    model, quantizer, probe = quantize_mixed(config, overrides)
    record, widths = assert_runs_as_reported(model, quantizer, probe)
    check = record['check']
    assert len(check['pairs']) >= 3
    assert -1.0 <= check['pair_spearman'] <= 1.0
    if overrides:
        # the user's input width stays, the allocation picks the weight's
        row = next(r for r in record['layers']
                   if r['name'] == 'backbone.layer2.0.conv2')
        assert row['free_w'] and not row['free_a'] and row['a_bits'] == 8
        assert widths['backbone.layer2.0.conv2'][1] == 8
        # and stays the user's: the allocation is not written back
        assert quantizer.quant.overrides == USER_OVERRIDE
        saved = quantizer.settings()['quant']['overrides']
        assert saved['backbone.layer2.0.conv2'] == dict(
            a_bits=8, w_bits=row['w_bits'])


def test_a_block_whose_first_convs_differ_runs_each_at_its_width(
        monkeypatch):
    """An allocation that gives a downsample block's conv1 8-bit inputs and
    its downsample conv 4-bit ones (the integer program may choose it):
    each runs at its own, and the budget counts what runs."""
    import mmlapq.lapq.mixed.choose as choose
    from mmlapq.lapq.allocation import Allocation
    forced = {'backbone.layer2.0.conv1': (2, 8),
              'backbone.layer2.0.downsample.0': (2, 4),
              'backbone.layer3.0.conv1': (2, 4),
              'backbone.layer3.0.downsample.0': (2, 8)}

    def allocate(layers, budget):
        choice = {l.name: forced.get(l.name, min(l.options, key=lambda o: (
            l.cost[l.options.index(o)]))) for l in layers}
        cost = sum(l.cost[l.options.index(choice[l.name])] for l in layers)
        return Allocation(choice, 0.0, cost, budget)

    monkeypatch.setattr(choose, 'allocate', allocate)
    model, quantizer, probe = quantize_mixed(
        'resnet18_w4a4', w_candidates=(2, 4), a_candidates=(4, 8))
    _, widths = assert_runs_as_reported(model, quantizer, probe)
    for name, (w, a) in forced.items():
        assert widths[name] == (w, a)


def test_int16_safe_weights_with_a_fixed_8_bit_weight(tmp_path):
    """int16_safe_weights puts 8-bit weights of 8-bit-input layers at 7
    bits: a user's fixed 8-bit weight whose input width the allocation
    chooses runs at 8 bits with a narrower input and at 7 with an 8-bit
    one, and the allocation counts what runs either way."""
    cfg = mixed_config(str(tmp_path), budget=dict(bops_of='w4a4'),
                       a_candidates=[4])
    cfg.quantizer.update(int16_safe_weights=True, a_bits=8, overrides={
        'backbone.layers.5': dict(w_bits=8)})
    runner, _ = run(cfg)
    quantizer = quantizer_of(runner)
    record = quantizer.state.mixed
    row = next(r for r in record['layers']
               if r['name'] == 'backbone.layers.5')
    assert row['free_a'] and not row['free_w']
    assert (row['w_bits'], row['a_bits']) == (8, 4)
    # the first layer (8-bit by first_last) runs at 7 bits
    assert record['layers'][0]['w_bits'] == 7
    widths = running_widths(unwrap(runner.model))
    for r in record['layers']:
        assert widths[r['name']] == (r['w_bits'], r['a_bits'])
    assert record['used'] <= record['budget']
