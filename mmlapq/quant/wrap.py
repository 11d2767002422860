"""Which layers are quantized, at which bit widths, and the wrapping itself.

Selection (in this order): layer type, include / exclude name patterns
(fnmatch on module names such as ``backbone.features.0.conv``), the
first/last-layer policy, then per-layer overrides, which win over the rest.

Activations are quantized where ``act_quant`` says: at the inputs of the
quantized Conv2d/Linear layers (this project's default, what integer
kernels consume), or at the outputs of the ReLU/ReLU6 modules (the LAPQ
reference's choice; the first/last policy then applies to the ReLUs on their
own, as the reference slices its ReLU list [1:-1]).
"""
import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from .bn_fold import fold_batch_norms
from .equalize import EqualizeSettings
from .grids import Grid, check_bits, check_choice, check_type
from .layernorm import LayerNormSettings
from .qmodules import (ACT_TYPES, POOL_TYPES, QUANT_LAYER_TYPES, QuantAct,
                       QuantConv2d, QuantLinear, has_same_padding,
                       quantize_module_input)
from .attention import quantize_attention_matmuls
from .conv_outputs import (OUTPUT_CHILD, convs_read_in_float,
                           quantize_conv_outputs)
from .residual import quantize_residual_adds

FLOAT_TYPES = {'Conv2d': nn.Conv2d, 'Linear': nn.Linear}
ACT_QUANT_PLACES = ('layer_inputs', 'relu_outputs')
FIRST_LAST_POLICIES = ('8bit', 'fp', 'same')
BIAS_CORRECTIONS = ('none', 'mean', 'empirical')
WEIGHT_GRIDS = ('signed', 'midrise')
# 'integer': the model computes what integer kernels compute (int32 bias at
# input step x weight step); 'fake_quant': float bias, as the LAPQ paper
# simulates quantization (its export cannot run integer kernels).
TARGETS = ('integer', 'fake_quant')
PRESETS = ('reference', )
FP = 'fp'  # an override value that keeps a tensor in floating point
INT16_SAFE_BITS = 7  # 255 x 63 x 2 = 32130 < 32767
BitsValue = Union[int, str, None]


@dataclass
class QuantSettings:
    """Everything that decides the shape of the quantized model."""

    w_bits: int = 4
    a_bits: int = 4
    w_grid: str = 'signed'
    w_per_channel: bool = False
    # 'auto': an input that was ever negative on the calibration set gets a
    # signed grid, otherwise unsigned. True/False force it.
    a_signed: Union[str, bool] = 'auto'
    layer_types: Sequence[str] = ('Conv2d', 'Linear')
    include: Sequence[str] = ('*', )
    exclude: Sequence[str] = ()
    first_last: str = '8bit'
    # {name pattern: {'w_bits': int | 'fp', 'a_bits': int | 'fp'}} or
    # {name pattern: 'fp'} to keep a whole layer in floating point.
    overrides: Dict[str, Union[str, Dict[str, BitsValue]]] = field(
        default_factory=dict)
    fold_bn: bool = True
    bias_correction: str = 'none'
    # 'layer_inputs' | 'relu_outputs' (see the module doc)
    act_quant: str = 'layer_inputs'
    preset: Optional[str] = None
    target: str = 'integer'
    # The integer target's residual adds (at least these bits): their
    # operands (None: the bits of the block's first conv input), which
    # integer runtimes hold in 8-bit types whatever a_bits, and the
    # identity shortcut (None: the widest first conv's input bits), which
    # a narrower first conv then requantizes to its own bits
    # (docs/deployment.md).
    add_bits: Optional[int] = 8
    shortcut_bits: Optional[int] = 8
    # The integer target's output quantizers of the convs whose outputs a
    # float op reads (LayerNorm, GELU, an add, a concat), so that those
    # convs run on integer kernels too (quant/conv_outputs.py); None: such
    # convs keep a float output and run as float convs in a runtime.
    conv_output_bits: Optional[int] = 8
    # Cross-layer equalization before wrapping (quant/equalize.py): False,
    # True (defaults) or a dict of EqualizeSettings fields.
    equalize: Union[bool, dict] = False
    # The attention products of mmcls's / mmpretrain's MultiheadAttention
    # on quantized operands (quant/attention.py): q, k and v at a_bits, the
    # softmax output at softmax_bits (None: a_bits). False: float products.
    attention_matmuls: bool = True
    softmax_bits: Optional[int] = None
    # LayerNorm reparameterization before wrapping (quant/layernorm.py):
    # False, True (defaults) or a dict of LayerNormSettings fields.
    layernorm_reparam: Union[bool, dict] = False
    # 8-bit weights of layers with 8-bit inputs take 7 bits (codes
    # -63..63): x86 CPUs without VNNI add pairs of u8 x s8 products in a
    # saturating int16 (255 x 127 x 2 > 32767), so their int8 kernels
    # compute other numbers than the model there (export/cpu.py).
    int16_safe_weights: bool = False

    def __post_init__(self):
        for key in ('w_per_channel', 'fold_bn', 'int16_safe_weights',
                    'attention_matmuls'):
            check_type(key, getattr(self, key), bool)
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f'preset {self.preset!r} is unknown: use '
                                 f'one of {", ".join(PRESETS)} or None')
            # The reference code (lapq/layer_scale_optimization_opt.py)
            # quantizes the weights of every Conv2d and the outputs of every
            # ReLU except the first and the last of each list (slice
            # [1:-1]); Linear layers stay FP and BN is not folded.
            self.layer_types, self.first_last = ('Conv2d', ), 'fp'
            self.act_quant, self.fold_bn = 'relu_outputs', False
            self.target = 'fake_quant'
        check_bits(self.w_bits, 'w_bits')
        check_bits(self.a_bits, 'a_bits')
        self.layer_types = tuple(self.layer_types)
        self.include, self.exclude = tuple(self.include), tuple(self.exclude)
        check_choice('w_grid', self.w_grid, WEIGHT_GRIDS)
        check_choice('first_last', self.first_last, FIRST_LAST_POLICIES)
        check_choice('bias_correction', self.bias_correction,
                     BIAS_CORRECTIONS)
        check_choice('act_quant', self.act_quant, ACT_QUANT_PLACES)
        check_choice('target', self.target, TARGETS)
        for key in ('add_bits', 'shortcut_bits', 'softmax_bits',
                    'conv_output_bits'):
            if getattr(self, key) is not None:
                check_bits(getattr(self, key), key)
        if self.a_signed not in ('auto', True, False):
            raise ValueError(f"a_signed={self.a_signed!r}: use 'auto', True "
                             'or False')
        unknown = [t for t in self.layer_types if t not in FLOAT_TYPES]
        if unknown or not self.layer_types:
            raise ValueError(f'layer_types {list(self.layer_types)} is not '
                             f'supported: choose from {list(FLOAT_TYPES)}')
        for pattern, value in self.overrides.items():
            _normalise_override(pattern, value)
        self.equalize_settings = EqualizeSettings.from_option(self.equalize)
        self.layernorm_settings = LayerNormSettings.from_option(
            self.layernorm_reparam)
        if self.equalize_settings is not None and not self.fold_bn:
            raise ValueError('equalize needs fold_bn=True: it rescales the '
                             'convs with their BatchNorms folded in')

    def to_dict(self) -> dict:
        d = asdict(self)
        d['layer_types'], d['include'] = list(d['layer_types']), list(
            d['include'])
        d['exclude'] = list(d['exclude'])
        return d


@dataclass
class LayerPlan:
    """The bit widths chosen for one layer (None: floating point)."""

    name: str
    type: str
    w_bits: Optional[int]
    a_bits: Optional[int]


def _bits_or_fp(value: BitsValue, what: str) -> Optional[int]:
    if value is None or value == FP:
        return None
    return check_bits(value, what)


def _normalise_override(pattern: str, value) -> Dict[str, Optional[int]]:
    if value == FP or value is None:
        return {'w_bits': None, 'a_bits': None}
    if not isinstance(value, dict) or not set(value) <= {'w_bits', 'a_bits'}:
        raise ValueError(
            f"override for {pattern!r} must be 'fp' or a dict with w_bits "
            f"and/or a_bits, got {value!r}")
    return {k: _bits_or_fp(v, f'{k} of override {pattern!r}')
            for k, v in value.items()}


def merge_overrides(base: Dict[str, object], extra: Dict[str, Dict]
                    ) -> Dict[str, Dict[str, Optional[int]]]:
    """``extra`` over ``base`` key by key: a layer named in both keeps the
    widths of ``base`` that ``extra`` does not set (a user's
    ``{conv: dict(a_bits=8)}`` and an allocation's ``{conv:
    dict(w_bits=3)}`` give W3A8). ``base`` is not changed."""
    merged = dict(base)
    for pattern, value in extra.items():
        if pattern in merged:
            merged[pattern] = dict(
                _normalise_override(pattern, merged[pattern]),
                **_normalise_override(pattern, value))
        else:
            merged[pattern] = value
    return merged


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def plan_layers(model: nn.Module, settings: QuantSettings) -> List[LayerPlan]:
    """Bit widths for every candidate layer, in module (execution) order.

    Raises ValueError naming the pattern when an include, exclude or override
    pattern matches no candidate layer, or when nothing would be quantized.
    """
    types = tuple(FLOAT_TYPES[t] for t in settings.layer_types)
    read_directly = _layers_read_directly(model)
    weighted = [(n, m) for n, m in model.named_modules()
                if isinstance(m, types + (QuantConv2d, QuantLinear))
                and n not in read_directly]
    acts = []
    if settings.act_quant == 'relu_outputs':
        inside = {id(m.act) for _, m in model.named_modules()
                  if isinstance(m, QuantAct)}
        acts = [(n, m) for n, m in model.named_modules()
                if isinstance(m, (QuantAct, ) + ACT_TYPES)
                and id(m) not in inside]
    names = [n for n, _ in weighted + acts]
    patterns = list(settings.include) + list(settings.exclude) + list(
        settings.overrides)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            shown = ', '.join(names[:6]) + (' ...' if len(names) > 6 else '')
            raise ValueError(
                f'layer pattern {pattern!r} matches no '
                f'{"/".join(settings.layer_types)} layer; layer names look '
                f'like: {shown or "(none)"}')
    for name, module in weighted:
        if _matches(name, settings.include) and \
                not _matches(name, settings.exclude):
            _check_forward_reproduced(name, module)
    at_relus = settings.act_quant == 'relu_outputs'
    a_bits = None if at_relus else settings.a_bits
    groups = [_plan_group(weighted, settings, settings.w_bits, a_bits),
              _plan_group(acts, settings, None, settings.a_bits)]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    plans = sorted((p for group in groups for p in group),
                   key=lambda p: order[p.name])
    for plan in plans:
        for pattern, value in settings.overrides.items():
            if fnmatch.fnmatchcase(plan.name, pattern):
                for key, bits in _normalise_override(pattern, value).items():
                    setattr(plan, key, bits)
        if plan.type in ACT_NAMES:
            plan.w_bits = None  # an activation module has no weight
        elif at_relus:
            plan.a_bits = None  # activations are quantized at the ReLUs
    plans = [p for p in plans if p.w_bits is not None or p.a_bits is not None]
    for plan in plans:
        plan.w_bits, plan.a_bits = running_widths_of(settings, plan.w_bits,
                                                     plan.a_bits)
    if not plans:
        raise ValueError('no layer is selected for quantization: check '
                         'layer_types, include/exclude and overrides')
    if settings.target == 'integer' and not at_relus:
        plans = sorted(plans + _plan_pools(model, plans, settings),
                       key=lambda p: order[p.name])
    return plans


def running_widths_of(settings: QuantSettings, w_bits: Optional[int],
                      a_bits: Optional[int]):
    """The widths a layer planned at ``(w_bits, a_bits)`` runs at: with
    ``int16_safe_weights`` an 8-bit weight of an 8-bit-input layer takes
    7 bits."""
    if settings.int16_safe_weights and w_bits == 8 and a_bits == 8:
        return INT16_SAFE_BITS, a_bits
    return w_bits, a_bits


def _layers_read_directly(model: nn.Module) -> set:
    """Linear layers whose weights their parent reads without calling them
    (nn.MultiheadAttention's out_proj): a quantized twin would never run,
    so they stay float."""
    return {f'{name}.{child}' if name else child
            for name, module in model.named_modules()
            if isinstance(module, nn.MultiheadAttention)
            for child, _ in module.named_children()}


# Conv2d / Linear subclasses whose forward computes what their base class's
# does (mmcv's wrappers only add a path for empty inputs); 'same' padding
# (quant.qmodules.has_same_padding) is reproduced by QuantConv2d itself.
_FORWARD_AS_BASE = ('mmcv.cnn.bricks.wrappers.Conv2d',
                    'mmcv.cnn.bricks.wrappers.Linear')


def _check_forward_reproduced(name: str, module: nn.Module) -> None:
    """A layer of a Conv2d / Linear subclass with a forward of its own
    (weight standardisation, masked or deformable convs) would lose it in
    its quantized twin: refuse it, naming the way out."""
    cls = type(module)
    if isinstance(module, (QuantConv2d, QuantLinear)) or \
            has_same_padding(module):
        return
    base = nn.Conv2d if isinstance(module, nn.Conv2d) else nn.Linear
    if cls.forward is base.forward or \
            f'{cls.__module__}.{cls.__qualname__}' in _FORWARD_AS_BASE:
        return
    raise ValueError(
        f'layer {name} is a {cls.__name__}, whose forward mmlapq cannot '
        f'reproduce in a quantized layer: leave it float with '
        f"quantizer.exclude=['{name}'] (or a pattern matching all of them)")


def _plan_pools(model: nn.Module, plans: List[LayerPlan],
                settings: QuantSettings) -> List[LayerPlan]:
    """Input quantizers of the average pools (the integer target): a pool
    between two quantized layers runs on integers only if its input is
    quantized too. It gets the activation bits of the next quantized layer
    in module order (the one its output feeds in a classifier: the head's
    fc after the neck's pool); overrides may change them."""
    pools = []
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    for name, module in model.named_modules():
        if not isinstance(module, POOL_TYPES):
            continue
        after = [p for p in plans if order[p.name] > order[name]
                 and p.a_bits is not None]
        if not after:
            continue
        plan = LayerPlan(name, type(module).__name__, None, after[0].a_bits)
        for pattern, value in settings.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                plan.a_bits = _normalise_override(pattern, value).get(
                    'a_bits', plan.a_bits)
        if plan.a_bits is not None:
            pools.append(plan)
    return pools


ACT_NAMES = tuple(t.__name__ for t in ACT_TYPES)


def _plan_group(candidates, settings: QuantSettings, w_bits, a_bits
                ) -> List[LayerPlan]:
    """Plans of one list of candidates (weighted layers, or activation
    modules): include/exclude, then the first/last policy on the list."""
    selected = [(n, m) for n, m in candidates
                if _matches(n, settings.include)
                and not _matches(n, settings.exclude)]
    plans = [LayerPlan(n, type(getattr(m, 'act', m)).__name__.replace(
        'Quant', ''), w_bits, a_bits) for n, m in selected]
    if plans and settings.first_last != 'same':
        edge_bits = 8 if settings.first_last == '8bit' else None
        for plan in {id(p): p for p in (plans[0], plans[-1])}.values():
            plan.w_bits = plan.a_bits = None if edge_bits is None else (
                edge_bits if plan.w_bits is not None else None,
                edge_bits)[0]
            plan.a_bits = edge_bits
    return plans


def quantize_model(model: nn.Module, settings: QuantSettings,
                   example: Optional[torch.Tensor] = None,
                   conv_outputs: Optional[Sequence[str]] = None
                   ) -> List[LayerPlan]:
    """Fold BN (if asked) and swap the planned layers for quantized ones, in
    place. Input grids start unsigned or signed as ``a_signed`` says ('auto'
    starts unsigned; the initialiser switches an input that goes negative).

    The convs whose outputs a float op reads get output quantizers
    (``conv_output_bits``, the integer target): those named in
    ``conv_outputs`` (a saved model's), or else those found by one forward
    of ``model`` on ``example`` (none without an example).
    Returns the plan."""
    if settings.fold_bn:
        fold_batch_norms(model)
    plans = plan_layers(model, settings)
    a_kind = 'signed' if settings.a_signed is True else 'unsigned'
    for plan in plans:
        layer = model.get_submodule(plan.name)
        if isinstance(layer, QUANT_LAYER_TYPES):
            raise ValueError(f'layer {plan.name} is already quantized: build '
                             'a fresh float model before quantize_model()')
        if isinstance(layer, ACT_TYPES):
            model.set_submodule(plan.name,
                                QuantAct(layer, Grid(plan.a_bits, a_kind)))
            continue
        if isinstance(layer, POOL_TYPES):
            quantize_module_input(layer, Grid(plan.a_bits, a_kind))
            continue
        qtype = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        qlayer = qtype.from_float(
            layer,
            w_grid=Grid(plan.w_bits, settings.w_grid) if plan.w_bits else None,
            a_grid=Grid(plan.a_bits, a_kind) if plan.a_bits else None,
            per_channel=settings.w_per_channel,
            weight_mean_correction=settings.bias_correction == 'mean',
            int_bias=settings.target == 'integer')
        model.set_submodule(plan.name, qlayer)
    added = []
    if settings.act_quant == 'layer_inputs' and settings.attention_matmuls:
        # the products at the input bits of their attention's qkv layer
        input_bits = {plan.name: plan.a_bits for plan in plans}
        added += [LayerPlan(name, kind, None, bits)
                  for name, kind, bits in quantize_attention_matmuls(
                      model, lambda attn: input_bits.get(f'{attn}.qkv'),
                      settings.softmax_bits, a_kind)]
    if settings.target == 'integer' and settings.act_quant == 'layer_inputs':
        added += [LayerPlan(name, kind, None, bits)
                  for name, kind, bits in quantize_residual_adds(
                      model, settings.add_bits, settings.shortcut_bits)]
    integer_inputs = settings.target == 'integer' and \
        settings.act_quant == 'layer_inputs'
    if integer_inputs and settings.conv_output_bits is not None:
        if conv_outputs is None and example is not None:
            conv_outputs = list(convs_read_in_float(model, example))
        # A conv's output has no ReLU to bound it: signed unless the clip
        # init picks the grid from the data.
        out_kind = a_kind if settings.a_signed == 'auto' else 'signed'
        added += [LayerPlan(name, kind, None, bits)
                  for name, kind, bits in quantize_conv_outputs(
                      model, conv_outputs or [], settings.conv_output_bits,
                      out_kind)]
    if added:
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        plans = sorted(plans + added, key=lambda p: order[p.name])
    if integer_inputs:
        _full_range_signed_activations(model)
    return plans


def conv_output_names(plans: Sequence[LayerPlan]) -> List[str]:
    """The convs given output quantizers in ``plans`` (to rebuild them)."""
    suffix = f'.{OUTPUT_CHILD}'
    return [p.name[:-len(suffix)] for p in plans
            if p.type == 'ConvOutput' and p.name.endswith(suffix)]


def _full_range_signed_activations(model: nn.Module) -> None:
    """Signed activations of the integer target use the whole integer
    range (grid 'signed_full'), as runtimes store them."""
    for layer in model.modules():
        if isinstance(layer, QUANT_LAYER_TYPES) and \
                layer.act_quantizer is not None:
            quantizer = layer.act_quantizer
            quantizer.signed_kind = 'signed_full'
            if quantizer.grid.kind == 'signed':
                quantizer.set_grid(Grid(quantizer.bits, 'signed_full'))
