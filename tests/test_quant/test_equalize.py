"""Known answers for cross-layer equalization: the float model computes the
same outputs, the ranges of each pair become equal, and pairs that scaling
would change (a non-homogeneous op, a second reader of the tensor, ReLU6
kept) are left alone."""
import pytest
import torch
import torch.nn as nn

from mmlapq.quant import QuantSettings, fold_batch_norms
from mmlapq.quant.equalize import (EqualizeSettings, _input_ranges,
                                   _output_ranges, equalize, find_pairs,
                                   replace_relu6)


def spread_channels(conv: nn.Conv2d, seed: int) -> None:
    """Output channels whose ranges span three orders of magnitude, as a
    depthwise conv's often do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        scale = 10 ** (3 * torch.rand(conv.out_channels, generator=g) - 1.5)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        if conv.bias is not None:
            conv.bias.mul_(scale)


def mobile_block(act=nn.ReLU) -> nn.Sequential:
    """conv -> act -> depthwise -> act -> conv -> act -> grouped conv."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), act(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), act(),
        nn.Conv2d(16, 8, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    for m in model:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    for i, seed in ((0, 1), (3, 2), (5, 3)):
        spread_channels(model[i], seed)
    return model.eval()


def probe(n=8):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 3, 12, 12, generator=g)


def run_equalize(model, x, **settings):
    fold_batch_norms(model)
    return equalize(model, lambda: model(x), EqualizeSettings(**settings))


def test_output_unchanged_and_ranges_equal_on_depthwise_and_grouped_convs():
    model, x = mobile_block(), probe()
    fold_batch_norms(model)
    before = model(x)
    record = run_equalize(model, x, max_iters=500, tol=1e-6)
    after = model(x)
    rel = (after - before).abs().max() / before.abs().max()
    assert rel < 1e-5
    pairs = {(p['first'], p['second']) for p in record['pairs']}
    assert pairs == {('0', '3'), ('3', '5'), ('5', '8')}
    assert record['max_log_scale'] < 1e-6
    for first, second in ((model[0], model[3]), (model[3], model[5]),
                          (model[5], model[8])):
        r1, r2 = _output_ranges(first), _input_ranges(second)
        assert torch.allclose(r1, r2, rtol=1e-4)
    # Equalization narrows the spread of the depthwise filters' ranges.
    ranges = _output_ranges(model[3])
    assert float(ranges.max() / ranges.min()) < 50


def test_an_exact_single_pair_converges_in_one_sweep():
    model = mobile_block()
    fold_batch_norms(model)
    r1 = _output_ranges(model[5]).clone()
    r2 = _input_ranges(model[8]).clone()
    from mmlapq.quant.equalize import equalization_scale, scale_pair
    scale_pair(model[5], model[8], equalization_scale(model[5], model[8]))
    expected = torch.sqrt(r1 * r2)
    assert torch.allclose(_output_ranges(model[5]), expected, rtol=1e-5)
    assert torch.allclose(_input_ranges(model[8]), expected, rtol=1e-5)


@pytest.mark.parametrize('act', [nn.Hardswish, nn.Sigmoid, nn.GELU])
def test_pairs_through_non_homogeneous_ops_are_left_alone(act):
    model, x = mobile_block(act), probe()
    fold_batch_norms(model)
    weights = [m.weight.clone() for m in (model[0], model[3])]
    record = run_equalize(model, x)
    pairs = {(p['first'], p['second']) for p in record['pairs']}
    assert pairs == {('5', '8')}  # the ReLU pair only
    assert torch.equal(model[0].weight, weights[0])
    assert torch.equal(model[3].weight, weights[1])


def test_relu6_is_kept_or_replaced_by_relu():
    model, x = mobile_block(nn.ReLU6), probe()
    fold_batch_norms(model)
    kept = run_equalize(model, x, relu6='keep')
    assert {(p['first'], p['second']) for p in kept['pairs']} == {('5', '8')}
    assert kept['relu6_replaced'] == []
    assert isinstance(model[2], nn.ReLU6)

    model = mobile_block(nn.ReLU6)
    fold_batch_norms(model)
    as_relu = mobile_block(nn.ReLU6)
    fold_batch_norms(as_relu)
    replace_relu6(as_relu, ['2', '4'])
    record = run_equalize(model, x)
    assert record['relu6_replaced'] == ['2', '4']
    assert type(model[2]) is nn.ReLU and type(model[4]) is nn.ReLU
    assert len(record['pairs']) == 3
    # Exact against the same model with ReLU in place of ReLU6.
    ref = as_relu(x)
    assert ((model(x) - ref).abs().max() / ref.abs().max()) < 1e-5


class Residual(nn.Module):
    """conv -> ReLU -> (conv, and an add that reads the ReLU's output)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.relu(self.conv1(x))
        out = self.conv2(y) + y  # a second reader of y
        return self.conv3(torch.relu(out))


def test_a_tensor_read_elsewhere_is_not_scaled():
    model, x = Residual().eval(), probe()
    spread_channels(model.conv1, 0)
    # The autograd graph sees the add reading y: not even a candidate.
    assert find_pairs(model, lambda: model(x)) == []
    before = model(x)
    record = equalize(model, lambda: model(x))
    assert record['candidates'] == 0 and record['pairs'] == []
    assert torch.equal(model(x), before)


def test_the_rescaling_check_rejects_what_the_trace_missed(monkeypatch):
    """A candidate the trace got wrong (here: forced) is rejected when
    rescaling it changes the output."""
    import mmlapq.quant.equalize as eq
    model, x = Residual().eval(), probe()
    spread_channels(model.conv1, 0)
    monkeypatch.setattr(eq, 'find_pairs', lambda *a: [
        (model.conv1, [model.relu], model.conv2)])
    before = model(x)
    record = equalize(model, lambda: model(x))
    assert record['candidates'] == 1 and record['pairs'] == []
    assert torch.equal(model(x), before)


def test_inplace_add_breaks_the_trace():
    """mmcls's BasicBlock adds the shortcut in place into the tensor its
    last conv made: the next conv does not read that conv's output."""

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 3, 1)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            out = self.conv1(x)
            out += x
            return self.conv2(self.relu(out))

    model, x = InPlace().eval(), probe()
    assert find_pairs(model, lambda: model(x)) == []


def test_bias_absorption_is_exact_where_the_pre_activation_stays_above():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[0].bias.add_(torch.linspace(0, 20, 8))  # some channels > 0
    x = probe()
    before = model(x)
    record = equalize(model, lambda: model(x),
                      EqualizeSettings(absorb_bias=True))
    assert record['biases_absorbed'] == 1
    assert ((model(x) - before).abs().max() / before.abs().max()) < 1e-5
    # The channels whose pre-activation stayed positive lost their minimum.
    pre = model[0](x).transpose(0, 1).flatten(1).amin(1)
    assert float(pre.min()) <= 1e-4


def test_settings():
    assert QuantSettings(equalize=True).equalize_settings == \
        EqualizeSettings()
    assert QuantSettings().equalize_settings is None
    assert QuantSettings(equalize=dict(relu6='keep')).equalize_settings.relu6 \
        == 'keep'
    with pytest.raises(ValueError, match='relu6'):
        QuantSettings(equalize=dict(relu6='hard'))
    with pytest.raises(ValueError, match='fold_bn'):
        QuantSettings(equalize=True, fold_bn=False)
    with pytest.raises(ValueError, match='equalize='):
        QuantSettings(equalize='yes')
    with pytest.raises(TypeError):
        QuantSettings(equalize=dict(iters=3))
