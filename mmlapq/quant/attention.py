"""Quantized attention matmuls (the integer target).

mmcls's and mmpretrain's ``MultiheadAttention`` compute the two attention
products inline: ``softmax(q @ k^T * scale) @ v``. Wrapping only the
``Linear`` layers (``qkv``, ``proj``) leaves both products in floating
point, which is not what an integer runtime runs at "W8A8". Here each
such attention gets four activation quantizers, each an ``nn.Identity``
child with an input quantizer (``quantize_module_input``, as the folded
BN at a residual branch's end has one):

- ``<attn>.q_act``, ``<attn>.k_act`` (on k^T) and ``<attn>.v_act`` at the
  input bits of the attention's ``qkv`` layer (its plan: the config's
  ``a_bits`` or an override of it): both operands of each product are on
  integer grids; where ``qkv`` reads float inputs (excluded, or ``'fp'``)
  the products stay float too;
- ``<attn>.attn_act`` on the softmax output, at ``softmax_bits`` (those
  input bits when None): unsigned whatever ``a_signed`` says, as softmax
  is in [0, 1].

The scale, the softmax, the dropout and the output projection's input
quantizer are unchanged; the module keeps its name, children and state
dict (the quantizers hold no state of their own there). With quantization
switched off (``quantization_disabled``) the module computes what the float
attention computes.

Only the classes known here are changed (by class name and module path,
the forward they compute being the one written below); any other attention
(``nn.MultiheadAttention``, Swin's window attention, ...) keeps float
products, and :func:`float_attention` names its class so the run can say
so.
"""
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .grids import Grid
from .qmodules import quantize_module_input

# class path -> library: mmcls keeps the scale and an attn_drop module,
# mmpretrain calls F.scaled_dot_product_attention with a dropout rate
_KNOWN = {
    'mmcls.models.utils.attention.MultiheadAttention': 'mmcls',
    'mmpretrain.models.utils.attention.MultiheadAttention': 'mmpretrain',
}
OPERANDS = ('q_act', 'k_act', 'v_act', 'attn_act')


def attention_kind(module: nn.Module) -> Optional[str]:
    """'mmcls' or 'mmpretrain' for a multi-head attention this module
    quantizes; None for any other module."""
    cls = type(module)
    cls = cls.__mro__[2] if isinstance(module, QuantAttentionMixin) else cls
    return _KNOWN.get(f'{cls.__module__}.{cls.__qualname__}')


def _is_attention(module: nn.Module) -> bool:
    """A module that computes attention (by its class name)."""
    name = type(module).__name__.lower()
    return 'attention' in name or name.endswith('msa')


class QuantAttentionMixin:
    """The forward of a multi-head attention with both products on
    quantized operands (see the module doc)."""

    def _product_scale(self) -> float:
        if self.attention_library == 'mmcls':
            return self.scale
        return self.head_dims ** -0.5  # F.scaled_dot_product_attention's

    def _attention_dropout(self, attn: torch.Tensor) -> torch.Tensor:
        if self.attention_library == 'mmcls':
            return self.attn_drop(attn)
        return F.dropout(attn, self.attn_drop, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads,
                                  self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (self.q_act(q) @ self.k_act(k.transpose(-2, -1))) * \
            self._product_scale()
        attn = self._attention_dropout(attn.softmax(dim=-1))
        x = (self.attn_act(attn) @ self.v_act(v)).transpose(1, 2).reshape(
            B, N, self.embed_dims)
        x = self.proj(x)
        x = self.out_drop(self.gamma1(self.proj_drop(x)))
        if self.v_shortcut:
            x = v.squeeze(1) + x
        return x


_CLASSES = {}


def _quantized_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f'Quant{cls.__name__}',
                             (QuantAttentionMixin, cls), {})
    return _CLASSES[cls]


def quantize_attention_matmuls(model: nn.Module,
                               bits_of: Callable[[str], Optional[int]],
                               softmax_bits: Optional[int] = None,
                               kind: str = 'unsigned'
                               ) -> List[Tuple[str, str, int]]:
    """Quantize the products of every known attention of ``model`` in
    place (see the module doc). ``bits_of(name)``: the input bits of the
    attention ``name``'s ``qkv`` layer, None where it stays float (then so
    do the products). q, k and v on grids of ``kind`` (the initialiser
    makes an input seen negative signed), the softmax output unsigned.
    Returns the (module name, class name, bits) of every quantizer
    added."""
    added = []
    for name, module in list(model.named_modules()):
        if not _quantizable(module):
            continue
        bits = bits_of(name)
        if bits is None:
            continue
        module.attention_library = attention_kind(module)
        module.__class__ = _quantized_class(type(module))
        for operand in OPERANDS:
            softmax = operand == 'attn_act'
            width = softmax_bits if softmax and softmax_bits else bits
            grid = Grid(width, 'unsigned' if softmax else kind)
            child = quantize_module_input(nn.Identity(), grid)
            module.add_module(operand, child.to(module.qkv.weight.device))
            added.append((f'{name}.{operand}', 'Identity', width))
    return added


def quantizable_attentions(model: nn.Module) -> List[str]:
    """The names of the attention modules of ``model`` whose products this
    module can quantize (before wrapping)."""
    return [name for name, module in model.named_modules()
            if _quantizable(module)]


def float_attention(model: nn.Module) -> List[str]:
    """The class names of the attention modules of ``model`` whose products
    stay float because this module does not know their forward, for the
    run's log (not those the settings leave float)."""
    names = []
    for module in model.modules():
        if isinstance(module, QuantAttentionMixin) or \
                not _is_attention(module):
            continue
        library = attention_kind(module)
        if library is None:
            label = type(module).__name__
        elif library == 'mmpretrain' and not _quantizable(module):
            label = f'{type(module).__name__} (qk_scale set)'
        else:
            continue  # one it knows, left float by the settings
        if label not in names:
            names.append(label)
    return names


def _quantizable(module: nn.Module) -> bool:
    library = attention_kind(module)
    if library is None or isinstance(module, QuantAttentionMixin):
        return False
    # mmpretrain with qk_scale set computes with its own (python) product
    return library == 'mmcls' or module.scaled_dot_product_attention is \
        F.scaled_dot_product_attention
