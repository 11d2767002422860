"""Quantized attention products (quant/attention.py): on mmcls's
VisionTransformer the quantized twin with quantization off computes what
the float attention computes, each of the four operand quantizers (q, k^T,
v, softmax output) changes the output when on, the products are quantized
by default and float only when asked, and an attention class mmlapq does
not know keeps float products and is named."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS, init_default_scope

import mmlapq  # noqa: F401
from mmlapq.quant import (QuantSettings, quantization_disabled,
                          quantize_model, quantizers)
from mmlapq.quant.attention import (OPERANDS, QuantAttentionMixin,
                                    float_attention)

VIT = dict(type='VisionTransformer',
           arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                     feedforward_channels=96),
           img_size=28, patch_size=7)


def vit(scope='mmcls'):
    init_default_scope(scope)
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=VIT, neck=None,
        head=dict(type='VisionTransformerClsHead', num_classes=10,
                  in_channels=48)))
    with torch.no_grad():
        model.head.layers.head.weight.normal_(0, 0.5)
    return model.eval()


def with_clips(model, scale=1.0):
    """Every clip from its tensor's range on one batch (max clips)."""
    from mmlapq.lapq import (CalibrationObjective, CalibrationSet,
                             ClipInitializer, InitSettings)
    from mmlapq.lapq.chain import build_chain
    x = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    calib = CalibrationSet([x], [torch.zeros(4).long()])
    obj = CalibrationObjective(build_chain(model, x), calib, model=model)
    ClipInitializer(obj, InitSettings(method='max', mode='independent'))()
    return x


def logits(model, x):
    with torch.no_grad():
        return model(x, mode='tensor')


@pytest.mark.parametrize('scope', [
    'mmcls', pytest.param('mmpretrain', marks=pytest.mark.mmpretrain)])
def test_quantization_off_is_the_float_attention(scope, request):
    if scope == 'mmpretrain':
        request.getfixturevalue('mmpretrain')
    model = vit(scope)
    reference = copy.deepcopy(model)
    quantize_model(model, QuantSettings(w_bits=4, a_bits=4))
    attn = model.backbone.layers[0].attn
    assert isinstance(attn, QuantAttentionMixin)
    assert attn.attention_library == scope
    x = with_clips(model)
    with quantization_disabled(model):
        assert torch.allclose(logits(model, x), logits(reference, x),
                              atol=1e-6, rtol=1e-5)
    assert set(model.state_dict()) == set(reference.state_dict())


def test_each_operand_quantizer_changes_the_output():
    """Each of q, k^T, v and the softmax output is quantized in the
    forward: a coarser clip on that one quantizer alone moves the logits."""
    model = vit()
    quantize_model(model, QuantSettings(w_bits=8, a_bits=8))
    x = with_clips(model)
    names = [n for n in quantizers(model) if '.attn.' in n and
             n.rsplit('.', 2)[-2] in OPERANDS]
    assert len(names) == 2 * 4
    base = logits(model, x)
    for name in names:
        q = quantizers(model)[name]
        alpha = q.alpha.clone()
        q.set_alpha(alpha * 0.05)
        assert not torch.allclose(logits(model, x), base), name
        q.set_alpha(alpha)
    # the softmax output is unsigned, the operands signed
    attn = model.backbone.layers[0].attn
    assert attn.attn_act.input_quantizer.grid.kind == 'unsigned'
    assert attn.q_act.input_quantizer.grid.kind == 'signed_full'


def test_the_products_are_quantized_unless_asked_not_to():
    model = vit()
    plans = quantize_model(model, QuantSettings(w_bits=4, a_bits=4,
                                                softmax_bits=8))
    widths = {p.name.rsplit('.', 1)[-1]: p.a_bits for p in plans
              if p.name.startswith('backbone.layers.0.attn.')}
    assert widths == dict(qkv=4, proj=4, q_act=4, k_act=4, v_act=4,
                          attn_act=8)
    kept_float = vit()
    quantize_model(kept_float, QuantSettings(attention_matmuls=False))
    assert not any(isinstance(m, QuantAttentionMixin)
                   for m in kept_float.modules())
    # left float by the settings, not for want of a forward: not named
    assert float_attention(kept_float) == []
    assert float_attention(model) == []


def test_the_products_take_the_widths_of_their_qkv_layer():
    """An override of an attention's qkv input (or a float qkv) steers its
    products: the widths that run are the plan's, not the global a_bits."""
    model = vit()
    plans = quantize_model(model, QuantSettings(
        w_bits=4, a_bits=4, softmax_bits=8, a_signed=True,
        overrides={'backbone.layers.0.attn.qkv': dict(a_bits=6),
                   'backbone.layers.1.attn.qkv': dict(a_bits='fp')}))
    widths = {p.name: p.a_bits for p in plans}
    assert [widths[f'backbone.layers.0.attn.{o}'] for o in OPERANDS] == \
        [6, 6, 6, 8]
    assert not any(n.startswith('backbone.layers.1.attn.') and
                   n.endswith('_act') for n in widths)
    assert not isinstance(model.backbone.layers[1].attn, QuantAttentionMixin)
    attn = model.backbone.layers[0].attn
    # a_signed=True signs q, k and v, never the softmax output
    assert attn.q_act.input_quantizer.grid.kind.startswith('signed')
    assert attn.attn_act.input_quantizer.grid.kind == 'unsigned'


def test_an_unknown_attention_keeps_float_products_and_is_named():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            return self.fc(self.attention(x, x, x)[0])

    model = Block()
    quantize_model(model, QuantSettings(first_last='same'))
    assert float_attention(model) == ['MultiheadAttention']
    assert type(model.attention) is nn.MultiheadAttention
