"""Mixed precision's costs and settings (lapq/mixed/): MACs of known
layers, which widths are free, the budgets in their units, and the one-line
refusals of bad settings before any work."""
import json

import pytest
import torch
from mmengine.registry import MODELS, init_default_scope
from toy_runner import toy_config

import mmlapq  # noqa: F401
from mmlapq.lapq.mixed import (CostModel, MixedSettings, cost_model,
                               layer_costs, layer_macs, model_costs,
                               weight_bytes)
from mmlapq.quant import QuantSettings, quantize_model

# the toy classifier of depth 3 on 8x8 images: conv 3->8, two convs 8->8
# (3x3, padding 1), global pool, fc 8->4
MACS = {'backbone.layers.0': 64 * 8 * 3 * 9,
        'backbone.layers.3': 64 * 8 * 8 * 9,
        'backbone.layers.5': 64 * 8 * 8 * 9, 'head.fc': 8 * 4}


def toy(tmp_path, depth=3):
    init_default_scope('mmcls')
    cfg = toy_config(str(tmp_path))
    cfg.model.backbone.depth = depth
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def probe():
    return torch.randn(2, 3, 8, 8)


def test_macs_of_known_layers(tmp_path):
    assert layer_macs(toy(tmp_path), probe()) == MACS
    depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    wrapper = torch.nn.Module()
    wrapper.backbone = depthwise
    wrapper.forward = lambda x, mode='tensor': depthwise(x)
    assert layer_macs(wrapper, torch.randn(1, 8, 5, 5)) == {
        'backbone': 25 * 8 * 9}


def test_first_and_last_layers_and_overrides_stay_fixed(tmp_path):
    model = toy(tmp_path)
    costs = {c.name: c for c in layer_costs(model, probe(), QuantSettings())}
    assert [n for n, c in costs.items() if c.free_w and c.free_a] == [
        'backbone.layers.3', 'backbone.layers.5']
    assert (costs['head.fc'].w_bits, costs['head.fc'].a_bits) == (8, 8)
    freed = layer_costs(model, probe(), QuantSettings(), free_first_last=True)
    assert all(c.free_w and c.free_a for c in freed)
    costs = {c.name: c for c in layer_costs(model, probe(), QuantSettings(
        overrides={'backbone.layers.5': dict(a_bits=8)}))}
    assert costs['backbone.layers.5'].free_w
    assert not costs['backbone.layers.5'].free_a
    assert costs['backbone.layers.5'].a_bits == 8


def test_budgets_in_their_units(tmp_path):
    model = toy(tmp_path)
    costs = layer_costs(model, probe(), QuantSettings())
    bops = CostModel(costs, MixedSettings(dict(bops_of='w4a4')))
    edges = MACS['backbone.layers.0'] * 64 + MACS['head.fc'] * 64
    assert bops.budget() == edges + 2 * MACS['backbone.layers.3'] * 16
    assert bops.minimum() == edges + 2 * MACS['backbone.layers.3'] * 2 * 4
    assert bops.options(costs[1]) == [(w, a) for w in (2, 3, 4, 8)
                                      for a in (4, 8)]
    assert bops.options(costs[0]) == [(8, 8)]
    size = CostModel(costs, MixedSettings(dict(weight_bytes=1000)))
    assert size.cost(costs[1], (3, 8)) == (8 * 8 * 9 + 1) // 2
    assert size.cost(costs[1], (8, 8)) == 8 * 8 * 9
    assert weight_bytes(5, 4) == 3 and weight_bytes(5, 12) == 10
    avg = CostModel(costs, MixedSettings(dict(weight_bits_avg=4.5)))
    params = 3 * 8 * 9 + 2 * 8 * 8 * 9 + 8 * 4
    assert avg.budget() == 4.5 * params
    # the benchmark's costs of the uniform model, read off the model, are
    # the budget's
    quantize_model(model, QuantSettings())
    assert model_costs(model, MACS)['bops'] == bops.budget()


def test_the_uniform_width_of_the_budget_is_a_candidate():
    settings = MixedSettings(dict(bops_of='w3a3'))
    assert settings.w_candidates == (2, 3, 4, 8)
    assert settings.a_candidates == (3, 4, 8)
    assert MixedSettings(dict(bops=1.0)).a_candidates == (4, 8)


@pytest.mark.parametrize('mixed, message', [
    (dict(budget=dict(flops=1)), "budget key 'flops' is unknown"),
    (dict(budget=dict(bops=1, weight_bytes=2)), 'gives 2 budgets'),
    (dict(budget=dict(bops_of='4bit')), "is not a width like 'w4a4'"),
    (dict(budget=dict(bops_of='w4a4'), w_candidates=(1, 4)),
     'outside 2..16'),
    (dict(budget=dict(bops_of='w4a4'), a_candidates=(4, 17)),
     'outside 2..16'),
    (dict(budget=dict(latency=2.0)), 'needs its table'),
    (dict(budget=dict(bops=-1)), 'must be > 0'),
    (dict(budget=dict(bops_of='w4a4'), w_candidates=()), 'non-empty'),
    (dict(budget=dict(bops_of='w4a4'), w_candidates=4),
     r'mixed.w_candidates=4 must be a list of widths, e.g. '
     r'w_candidates=\(2, 3, 4, 8\)'),
    (dict(budget=dict(bops_of='w4a4'), a_candidates='48'),
     "mixed.a_candidates='48' must be a list of widths"),
])
def test_bad_settings_are_one_line_errors(mixed, message):
    from mmlapq.engine import LAPQError
    from mmlapq.registry import MODELS as LAPQ_MODELS
    with pytest.raises(LAPQError, match=message) as info:
        LAPQ_MODELS.build(dict(type='mmlapq.LAPQQuantizer', mixed=mixed))
    assert '\n' not in str(info.value)
    with pytest.raises(LAPQError, match='unexpected keyword'):
        LAPQ_MODELS.build(dict(type='mmlapq.LAPQQuantizer',
                               mixed=dict(budget=dict(bops=1), widths=3)))


def test_a_budget_below_the_smallest_widths_is_refused(tmp_path):
    model = toy(tmp_path)
    lowest = cost_model(model, probe(), QuantSettings(), MixedSettings(
        dict(bops_of='w2a4'))).minimum()  # exactly the minimum: accepted
    assert lowest == cost_model(model, probe(), QuantSettings(),
                                MixedSettings(dict(bops=lowest))).budget()
    with pytest.raises(ValueError, match='is below .* what the smallest '
                       'candidate widths cost: raise the budget'):
        cost_model(model, probe(), QuantSettings(),
                   MixedSettings(dict(bops=lowest - 1)))


def test_a_latency_table_of_another_model_is_refused(tmp_path):
    model = toy(tmp_path)
    table = tmp_path / 'latency.json'
    rows = {n: {f'w{w}a{a}': 1.0 for w in (2, 3, 4, 8) for a in (4, 8)}
            for n in MACS}
    rows['head.fc'] = {'w8a8': 1.0}
    table.write_text(json.dumps(dict(layers={'backbone.other': {}, **rows})))
    settings = MixedSettings(dict(latency=5.0, table=str(table)))
    with pytest.raises(ValueError, match='measured on another model'):
        cost_model(model, probe(), QuantSettings(), settings)
    del rows['backbone.layers.0']
    rows['backbone.layers.0'] = {'w8a8': 1.0}
    table.write_text(json.dumps(dict(layers=rows)))
    costs = cost_model(model, probe(), QuantSettings(), settings)
    assert costs.minimum() == 4.0
    with pytest.raises(ValueError, match='does not exist'):
        cost_model(model, probe(), QuantSettings(), MixedSettings(
            dict(latency=5.0, table=str(tmp_path / 'none.json'))))


def test_float_layers_count_at_32_bits(tmp_path):
    """With first_last='fp' the float first and last layers stay in the
    costs, fixed, at 32 bits in BOPs and bits and 4 bytes per parameter."""
    model = toy(tmp_path)
    quant = QuantSettings(first_last='fp')
    costs = layer_costs(model, probe(), quant)
    assert [c.name for c in costs] == list(MACS)
    edges = [c for c in costs if c.name in ('backbone.layers.0', 'head.fc')]
    assert all((c.w_bits, c.a_bits, c.free_w, c.free_a) ==
               (None, None, False, False) for c in edges)
    bops = CostModel(costs, MixedSettings(dict(bops_of='w4a4')))
    float_bops = (MACS['backbone.layers.0'] + MACS['head.fc']) * 32 * 32
    assert bops.budget() == float_bops + 2 * MACS['backbone.layers.3'] * 16
    assert bops.options(edges[0]) == [(None, None)]
    params = {'backbone.layers.0': 3 * 8 * 9, 'head.fc': 8 * 4}
    size = CostModel(costs, MixedSettings(dict(weight_bytes=1e6)))
    assert size.cost(edges[0], (None, None)) == 4 * params[edges[0].name]
    avg = CostModel(costs, MixedSettings(dict(weight_bits_avg=4.0)))
    assert avg.minimum() == 32 * sum(params.values()) + 2 * 8 * 8 * 9 * 2
    # a layer left float by exclude counts too
    excluded = layer_costs(model, probe(), QuantSettings(
        exclude=['backbone.layers.3']))
    assert len(excluded) == 4 and excluded[1].w_bits is None
    # and the model's own costs agree: float layers at 32 bits
    quantize_model(model, quant)
    assert model_costs(model, MACS)['bops'] == bops.budget()


def test_weight_bytes_are_the_packed_codes():
    """The budget's bytes are what the quantized checkpoint stores."""
    from mmlapq.quant import Grid
    from mmlapq.quant.int_weights import pack_codes
    for bits in (2, 3, 4, 5, 8, 12):
        for numel in (1, 7, 64):
            codes = torch.zeros(numel, dtype=torch.int32)
            packed = pack_codes(codes, Grid(bits, 'signed'))['data']
            assert weight_bytes(numel, bits) == \
                packed.numel() * packed.element_size()
    assert weight_bytes(5, None) == 20


@pytest.mark.parametrize('content', ['[1, 2]', '"w4a4"', '{"layers": [1]}',
                                     '{"a": {"w4a4": "fast"}}', 'not json'])
def test_a_latency_table_of_another_form_is_one_line(tmp_path, content):
    table = tmp_path / 'latency.json'
    table.write_text(content)
    settings = MixedSettings(dict(latency=5.0, table=str(table)))
    with pytest.raises(ValueError, match=f'latency table {table} is not') \
            as info:
        cost_model(toy(tmp_path), probe(), QuantSettings(), settings)
    assert '\n' not in str(info.value)
    assert 'tools/latency_table.py' in str(info.value)
