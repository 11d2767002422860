"""LayerNorm reparameterization (quant/layernorm.py): exact in float on a
ViT with uneven LayerNorm affines, every LayerNorm feeding qkv / fc1
folded, the channels' ranges equal afterwards (alpha 1) or their spread
between (alpha 0.5), and a LayerNorm read by something other than the
Linear layers is refused with the model left as it was."""
import copy

import pytest
import torch
import torch.nn as nn
from test_attention import vit

from mmlapq.quant.layernorm import (LayerNormSettings,
                                    reparameterize_layernorms)


def uneven(model):
    """LayerNorm affines of a trained transformer: channel scales spread
    over more than an order of magnitude, offsets of either sign."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g)
                               .mul(3).sub(1.5).exp())
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return model


def batches():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(6, 3, 28, 28, generator=g) for _ in range(2)]


@pytest.mark.parametrize('alpha', [1.0, 0.5])
def test_exact_and_the_ranges_evened(alpha):
    model = uneven(vit())
    reference = copy.deepcopy(model)
    xs = batches()
    record = reparameterize_layernorms(
        model, lambda: [model(x, mode='tensor') for x in xs],
        LayerNormSettings(alpha=alpha))
    folded = {r['norm']: r['readers'] for r in record['layernorms']}
    assert folded == {
        f'backbone.layers.{i}.ln{j}': [
            f'backbone.layers.{i}.' + ('attn.qkv' if j == 1 else
                                       'ffn.layers.0.0')]
        for i in range(2) for j in (1, 2)}
    x = torch.randn(5, 3, 28, 28)
    with torch.no_grad():
        got, want = model(x, mode='tensor'), reference(x, mode='tensor')
    assert float((got - want).abs().max()) <= 1e-5 * float(
        want.abs().max())
    for row in record['layernorms']:
        assert row['spread_before'] > 10
        if alpha == 1.0:
            assert row['spread_after'] == pytest.approx(1.0, rel=1e-4)
        else:
            assert 1.0 < row['spread_after'] < row['spread_before']


def test_a_layernorm_read_elsewhere_is_refused_and_undone():
    class Shortcut(nn.Module):
        """y = fc(ln(x)) + ln(x): the add reads the LayerNorm's output."""

        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            y = self.ln(x)
            return self.fc(y) + y

    torch.manual_seed(0)
    model = uneven(Shortcut())
    reference = copy.deepcopy(model)
    xs = [torch.randn(16, 8)]
    with pytest.raises(ValueError, match='something other than the Linear'):
        reparameterize_layernorms(model, lambda: [model(x) for x in xs])
    for a, b in zip(model.state_dict().values(),
                    reference.state_dict().values()):
        assert torch.equal(a, b)


def test_settings():
    assert LayerNormSettings.from_option(False) is None
    assert LayerNormSettings.from_option(True).alpha == 1.0
    with pytest.raises(ValueError, match='alpha'):
        LayerNormSettings(alpha=1.5)
    with pytest.raises(ValueError, match='layernorm_reparam'):
        LayerNormSettings.from_option('yes')
