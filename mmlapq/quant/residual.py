"""Quantized residual additions (the integer target).

An integer runtime adds two quantized tensors (onnxruntime's
``QLinearAdd``) only if both operands and the sum are quantized, and the
add of a residual block reads the block's input itself (the identity
shortcut) next to the block's first convs. So, for each residual block of
a known kind whose BNs are folded:

- the block gets an input quantizer (``<block>.input``) that the identity
  shortcut reads, at ``shortcut_bits`` (8 by default) or the first
  conv(s)' input bits if more. At equal bits (W8A8) the convs read it too
  and lose their own (their integer bias uses the block's step:
  ``set_input_source``); at W4A4 they keep theirs and requantize the 8-bit
  input to 4 bits (a float DequantizeLinear -> QuantizeLinear per block in
  the graph), so that the shortcut does not carry 4-bit codes;
- the end of the main branch (the folded BN, now an identity) and of a
  downsample shortcut get an input quantizer each: the two operands
  (``<block>.bn2.input``, ``<block>.downsample.1.input`` ...);
- the sum is quantized by whatever reads it next (the next block's input
  quantizer, a conv's, the neck's pool's): a ReLU between is the unsigned
  grid's lower bound.

The blocks are recognised by class name and module path (mmcls's ResNet
``BasicBlock`` / ``Bottleneck``, ResNeXt's ``Bottleneck`` (RegNet's too),
which keeps ResNet's forward, and MobileNetV2 ``InvertedResidual``, whose
forwards add exactly ``branch + shortcut``; mmpretrain's classes of the
same path match too, not yet tested: issue 22);
a subclass (SE, ...) or any other block keeps a float add, exact but run
in floating point.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch.nn as nn

from .grids import Grid
from .qmodules import QuantConv2d, quantize_module_input, unquantized_class

Slot = Tuple[nn.Module, str]  # (parent, attribute name) of a module


@dataclass(frozen=True)
class ResidualKind:
    """How one kind of residual block adds its branch to its shortcut."""

    class_name: str
    # Convs that read the block's input (None: not an adding block).
    first_convs: Callable[[nn.Module], Optional[List[nn.Module]]]
    # Where the main branch ends, just before the add.
    branch_end: Callable[[nn.Module], Slot]
    # Where a projection shortcut ends (None: the identity).
    shortcut_end: Callable[[nn.Module], Optional[Slot]]


def _plain_downsample(block) -> Optional[nn.Sequential]:
    """The (conv, folded BN) downsample of a ResNet block, or None."""
    down = block.downsample
    if down is None:
        return None
    if type(down) is nn.Sequential and len(down) == 2 and \
            isinstance(down[0], nn.Conv2d):
        return down
    raise _Unsupported  # e.g. avg_down: a pool before the conv


class _Unsupported(Exception):
    """A block of a known kind in a variant this module does not handle."""


def _resnet_convs(block):
    down = _plain_downsample(block)
    return [block.conv1] + ([down[0]] if down is not None else [])


def _resnet_shortcut(block):
    down = _plain_downsample(block)
    return None if down is None else (down, '1')


def _inverted_residual_convs(block):
    if not block.use_res_connect:
        return None
    return [block.conv[0].conv]


def _last_norm(block):
    last = block.conv[-1]
    return last, last.norm_name


KINDS = (
    ResidualKind('BasicBlock', _resnet_convs,
                 lambda b: (b, b.norm2_name), _resnet_shortcut),
    ResidualKind('Bottleneck', _resnet_convs,
                 lambda b: (b, b.norm3_name), _resnet_shortcut),
    ResidualKind('InvertedResidual', _inverted_residual_convs, _last_norm,
                 lambda b: None),
)
# ResNeXt's Bottleneck (also RegNet's) changes only ResNet's __init__.
_MODULES = ('.models.backbones.resnet', '.models.backbones.resnext',
            '.models.backbones.mobilenet_v2')


def residual_kind(block: nn.Module) -> Optional[ResidualKind]:
    """The kind of an mmcls / mmpretrain residual block (exact class)."""
    cls = unquantized_class(block)
    if not cls.__module__.endswith(_MODULES):
        return None
    return next((k for k in KINDS if k.class_name == cls.__name__), None)


def quantize_residual_adds(model: nn.Module, operand_bits: Optional[int],
                           shortcut_bits: Optional[int] = None
                           ) -> List[Tuple[str, str, int]]:
    """Quantize the adds of ``model``'s residual blocks in place (see the
    module doc), for blocks whose first convs have input quantizers. The
    block's input quantizer takes over those of its widest convs; the
    operands' quantizers get ``operand_bits`` (None: the first conv's
    input bits).
    Returns (module name, class name, bits) of every module given a
    quantizer."""
    added = []
    names = {id(m): n for n, m in model.named_modules()}
    for name, block in list(model.named_modules()):
        kind = residual_kind(block)
        if kind is None:
            continue
        try:
            convs = kind.first_convs(block)
            shortcut = kind.shortcut_end(block)
        except _Unsupported:
            continue
        if not convs or not all(isinstance(c, QuantConv2d) and
                                c.input_quantizer is not None
                                for c in convs):
            continue
        grid = convs[0].input_quantizer.grid
        widest = max(c.input_quantizer.bits for c in convs)
        operand = Grid(max(operand_bits or 0, grid.bits), grid.kind)
        slots = [kind.branch_end(block)] + ([shortcut] if shortcut else [])
        if any(type(getattr(p, n)) is not nn.Identity for p, n in slots):
            continue  # a BN that was not folded: the add stays float
        for parent, attr in slots:
            module = quantize_module_input(getattr(parent, attr), operand)
            added.append((names[id(module)], 'Identity', operand.bits))
        # At least the widest first conv's bits: a conv reading a narrower
        # block quantizer would run at the block's width, not its own.
        block_grid = Grid(max(shortcut_bits or 0, widest), grid.kind)
        quantize_module_input(block, block_grid)
        added.append((name, kind.class_name, block_grid.bits))
        for conv in convs:
            if conv.input_quantizer.bits == block_grid.bits:
                # The conv reads the block's codes as they are (the
                # fastest graph): one quantizer for it and the shortcut.
                conv.input_quantizer = None
                conv.set_input_source(block.input_quantizer)
            # Otherwise the conv requantizes the block's input to its own
            # (narrower) grid: a float DequantizeLinear -> QuantizeLinear.
    return added
