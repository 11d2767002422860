"""Quantized Conv2d and Linear.

They subclass the float layers and keep their parameters under the same names
(``weight``, ``bias``), so a float state dict loads into a wrapped model with
no missing or unexpected keys. The clips live in non-persistent buffers and
travel in the quantized checkpoint separately (see ``quant.control``).

Cost: the quantized weight is computed once per change of its clip (or of the
weight) and cached; a forward costs the float layer plus the fake-quantize of
the input (round(x / step), clamped, times step: the rule of Grid.quantize).
"""
import itertools
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .grids import Grid

_versions = itertools.count(1)


class TensorQuantizer(nn.Module):
    """Fake-quantizes one tensor on a :class:`Grid` with clip ``alpha``.

    ``alpha`` is a scalar, or one value per output channel (``channel_axis``
    set) for per-channel weights. Every change of alpha bumps ``version`` so
    that caches keyed on it are invalidated.
    """

    def __init__(self, grid: Grid, channel_axis: Optional[int] = None):
        super().__init__()
        self.grid = grid
        self.channel_axis = channel_axis
        # The grid kind an input seen negative gets ('signed', or
        # 'signed_full' for the integer target's activations).
        self.signed_kind = 'signed'
        self.register_buffer('alpha', torch.tensor(float('nan')),
                             persistent=False)
        self._alpha_float: Optional[float] = None
        self.version = next(_versions)

    @property
    def bits(self) -> int:
        return self.grid.bits

    @property
    def initialized(self) -> bool:
        if self.channel_axis is None:  # set_alpha checked it: no device sync
            return self._alpha_float is not None
        return bool(torch.isfinite(self.alpha).all())

    def set_grid(self, grid: Grid) -> None:
        if grid != self.grid:
            self.grid = grid
            self.version = next(_versions)

    def set_alpha(self, alpha) -> None:
        """Set the clip; a no-op (no version bump) when it is unchanged."""
        alpha = torch.as_tensor(alpha, dtype=torch.float32).detach()
        alpha = alpha.to(self.alpha.device).reshape(
            alpha.shape if self.channel_axis is not None else ())
        if not bool(torch.isfinite(alpha).all()) or bool((alpha <= 0).any()):
            raise ValueError(f'clip values must be finite and > 0, got {alpha}')
        if alpha.shape == self.alpha.shape and torch.equal(alpha, self.alpha):
            return
        self.alpha = alpha
        self._alpha_float = float(alpha) if alpha.dim() == 0 else None
        self.version = next(_versions)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Values of integer levels ``codes`` at the current clip(s)."""
        alpha = self._broadcast_alpha(codes) if self.channel_axis is not None \
            else self._alpha_float
        return self.grid.from_codes(codes, alpha)

    def _broadcast_alpha(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return self.alpha.view(shape)

    def set_learned_step(self, learned: Optional[nn.Module]) -> None:
        """Quantize with ``learned`` (a ``quant.lsq.LearnedStep``, whose
        clip is differentiable) instead of ``alpha`` while a reconstruction
        learns the step (None: back to ``alpha``). Held as a reference, not
        a submodule, so the state dict does not change."""
        self.__dict__['learned_step'] = learned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        learned = self.__dict__.get('learned_step')
        if learned is not None:
            return learned(x)
        if self._alpha_float is None and self.channel_axis is None:
            raise RuntimeError('a quantizer has no clip value yet: initialise '
                               'the clips (mmlapq.quant.init) before running '
                               'the quantized model')
        # Grid.quantize divides by the step, as ONNX QuantizeLinear does;
        # torch's fused fake_quantize_* ops multiply by 1/step, which rounds
        # differently at half steps, so they are not used.
        if self.channel_axis is not None:
            return self.grid.quantize(x, self._broadcast_alpha(x))
        return self.grid.quantize(x, self._alpha_float)

    def extra_repr(self) -> str:
        axis = '' if self.channel_axis is None else ', per_channel'
        return f'bits={self.grid.bits}, grid={self.grid.kind}{axis}'


INT32_MAX = 2**31 - 1


def integer_bias(bias: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """``bias`` on the int32 grid of ``step`` (one per output channel):
    what a runtime adds to the integer accumulator of a conv or matmul whose
    input and weight steps multiply to ``step``."""
    codes = torch.round(bias / step).clamp_(-INT32_MAX, INT32_MAX)
    return codes * step


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class QuantLayerMixin:
    """Shared quantization state of :class:`QuantConv2d` and QuantLinear."""

    weight_quantizer: Optional[TensorQuantizer]
    input_quantizer: Optional[TensorQuantizer]
    # The activation quantizer sits on the layer's input; its clip is named
    # ``<layer>.input``.
    act_slot = 'input'

    @property
    def act_quantizer(self) -> Optional[TensorQuantizer]:
        return self.input_quantizer

    @staticmethod
    def observe(x: torch.Tensor) -> torch.Tensor:
        """The tensor the activation quantizer sees, given the layer's
        input (what clip initialisers gather statistics on)."""
        return x

    @classmethod
    def from_float(cls, layer: nn.Module, w_grid: Optional[Grid],
                   a_grid: Optional[Grid], per_channel: bool = False,
                   weight_mean_correction: bool = False,
                   int_bias: bool = False):
        """The quantized twin of a float layer, sharing its parameters (no
        copy); a grid of None keeps that tensor in floating point.
        ``int_bias``: round the bias to integers at input step x weight
        step, as integer kernels add it (see :func:`integer_bias`)."""
        q = cls._empty_like(layer)  # allocates nothing (meta device)
        q.weight, q.bias = layer.weight, layer.bias
        q._init_quant(w_grid, a_grid, per_channel, weight_mean_correction)
        q.int_bias = int_bias
        q.to(layer.weight.device)
        q.train(layer.training)
        return q

    def _init_quant(self, w_grid: Optional[Grid], a_grid: Optional[Grid],
                    per_channel: bool, weight_mean_correction: bool) -> None:
        self.weight_quantizer = (TensorQuantizer(
            w_grid, 0 if per_channel else None) if w_grid else None)
        self.input_quantizer = TensorQuantizer(a_grid) if a_grid else None
        self.quant_enabled = True
        self.weight_mean_correction = weight_mean_correction
        self.int_bias = False
        # Empirical bias correction (per output channel), set after the search.
        self.register_buffer('bias_shift', None, persistent=False)
        # Integer levels chosen by a rounding method (GPTQ), shaped like the
        # weight; None: round to nearest. The weight is then codes x step at
        # the current clip, so a clip change rescales the chosen levels.
        self.register_buffer('weight_codes', None, persistent=False)
        self._cache_key = None
        self._cached: Tuple[torch.Tensor, Optional[torch.Tensor]] = (None, None)

    def state_key(self) -> tuple:
        """Changes whenever this layer's quantized output could change."""
        wq, aq = self.weight_quantizer, self.input_grid_quantizer()
        shift, codes = self.bias_shift, self.weight_codes
        return (self.quant_enabled, wq.version if wq else 0,
                aq.version if aq else 0, self.weight._version,
                id(self.weight), self.weight_mean_correction, self.int_bias,
                None if self.bias is None else (id(self.bias),
                                                self.bias._version),
                None if shift is None else (id(shift), shift._version),
                None if codes is None else (id(codes), codes._version))

    def set_weight_codes(self, codes: Optional[torch.Tensor]) -> None:
        """Fix the integer level of every weight (None: nearest again)."""
        if codes is not None:
            wq = self.weight_quantizer
            if wq is None or tuple(codes.shape) != tuple(self.weight.shape):
                raise ValueError('weight codes need a weight quantizer and '
                                 'the shape of the weight')
            codes = codes.to(device=self.weight.device,
                             dtype=self.weight.dtype)
        self.weight_codes = codes

    def quantized_weight_and_bias(self):
        """Weight on its grid (mean-corrected if asked) and the bias plus the
        empirical shift; cached until a clip, the weight or the shift
        changes."""
        key = self.state_key()
        if key != self._cache_key:
            with torch.no_grad():
                w = self.weight
                if self.weight_codes is not None:
                    # In the float weight's memory format, whatever the
                    # codes' own: the conv kernel (and its float rounding)
                    # depends on it, and a reloaded model must compute
                    # exactly what the run did.
                    w = self.weight_quantizer.dequantize(
                        self.weight_codes).contiguous(
                            memory_format=_memory_format(self.weight))
                elif self.weight_quantizer is not None:
                    w_hat = self.weight_quantizer(w)
                    if self.weight_mean_correction:
                        dims = tuple(range(1, w.dim()))
                        w_hat = w_hat + (w - w_hat).mean(dims, keepdim=True)
                    w = w_hat
                bias = self.bias
                if self.bias_shift is not None:
                    bias = self.bias_shift if bias is None \
                        else bias + self.bias_shift
                step = self.bias_step()
                if bias is not None and step is not None:
                    bias = integer_bias(bias, step)
            self._cached = (w.detach(), None if bias is None else bias.detach())
            self._cache_key = key
        return self._cached

    def set_input_source(self, quantizer: Optional[TensorQuantizer]) -> None:
        """The quantizer that already quantized this layer's input where the
        layer has none of its own (the input quantizer of the residual block
        it starts): the integer bias uses its step. Held as a reference, not
        a submodule: the block owns it."""
        self.__dict__['input_source'] = quantizer

    def input_grid_quantizer(self) -> Optional[TensorQuantizer]:
        """The quantizer whose grid this layer's input is on."""
        if self.input_quantizer is not None:
            return self.input_quantizer
        return self.__dict__.get('input_source')

    def bias_step(self) -> Optional[torch.Tensor]:
        """The step of the integer bias, input step x weight step (one per
        output channel), in float32 as a runtime computes it; None when the
        bias stays float (``int_bias`` off, or an input or weight that is
        not on an integer grid)."""
        wq, aq = self.weight_quantizer, self.input_grid_quantizer()
        if not self.int_bias or wq is None or aq is None or \
                'midrise' in (wq.grid.kind, aq.grid.kind) or \
                self.weight_mean_correction:
            return None
        w_step = wq.grid.step(wq.alpha.float()).reshape(-1)
        a_step = aq.grid.step(aq.alpha.float())
        return (a_step * w_step).expand(self.weight.shape[0])

    def quant_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.quant_enabled:
            return self._float_forward(x, self.weight, self.bias)
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w, b = self.quantized_weight_and_bias()
        soft = self.__dict__.get('soft_rounding')
        if soft is not None:  # learned rounding being optimised
            w = soft.soft_weight().to(w.dtype)
        return self._float_forward(x, w, b)

    def set_soft_rounding(self, soft: Optional[nn.Module]) -> None:
        """Compute with ``soft.soft_weight()`` (differentiable) instead of
        the weight on its grid while a rounding is learned (None: back to
        the grid). Held as a reference, not a submodule, so the state dict
        does not change."""
        self.__dict__['soft_rounding'] = soft

    def weight_error_output(self, x: torch.Tensor) -> torch.Tensor:
        """(W - W_hat) applied to the (quantized) input, no bias: the output
        error that weight quantization adds. Used by bias correction."""
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w_hat, _ = self.quantized_weight_and_bias()
        return self._float_forward(x, self.weight - w_hat, None)

    def quant_repr(self) -> str:
        wq, aq = self.weight_quantizer, self.input_quantizer
        w = f'w={wq.extra_repr()}' if wq else 'w=fp'
        a = f'a={aq.extra_repr()}' if aq else 'a=fp'
        return f'{w}; {a}'


def has_same_padding(conv: nn.Module) -> bool:
    """Whether ``conv`` pads its input as TensorFlow's 'same' does, by its
    size at each call (mmcv's Conv2dAdaptivePadding, in EfficientNet)."""
    return bool(getattr(conv, 'same_padding', False)) or \
        type(conv).__name__ == 'Conv2dAdaptivePadding'


class SamePad2d(nn.Module):
    """Zero padding as TensorFlow's 'same': the output has ceil(size /
    stride) positions, the odd pixel (if any) padded on the right / bottom.
    The padding depends on the input size, so it is computed per call."""

    def __init__(self, kernel_size, stride, dilation):
        super().__init__()
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.dilation = tuple(dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size,
                                 self.stride, self.dilation):
            out = -(-size // s)  # ceil
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return x


class QuantConv2d(QuantLayerMixin, nn.Conv2d):
    """nn.Conv2d with a quantized weight and a fake-quantized input. A
    float conv with TensorFlow 'same' padding (``has_same_padding``) keeps
    it: the (quantized) input is zero-padded by its size at each call,
    which commutes with quantizing it, as zero is on every input grid."""

    same_padding = False

    @staticmethod
    def _empty_like(conv: nn.Conv2d) -> 'QuantConv2d':
        q = QuantConv2d(conv.in_channels, conv.out_channels,
                        conv.kernel_size, stride=conv.stride,
                        padding=conv.padding, dilation=conv.dilation,
                        groups=conv.groups, bias=conv.bias is not None,
                        padding_mode=conv.padding_mode, device='meta')
        if has_same_padding(conv):
            q.same_padding = True
            q.pad = SamePad2d(conv.kernel_size, conv.stride, conv.dilation)
        return q

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the convolution itself sees it (its 'same' padding
        applied; the conv's own static padding is not)."""
        return self.pad(x) if self.same_padding else x

    def _float_forward(self, x, w, b):
        return self._conv_forward(self.pad_input(x), w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.quant_forward(x)
        # An output quantizer (quant/conv_outputs.py), called even while
        # quantization is off so that hooks see the same calls.
        output = self._modules.get('output')
        return y if output is None else output(y)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, {self.quant_repr()}'


class QuantLinear(QuantLayerMixin, nn.Linear):
    """nn.Linear with a quantized weight and a fake-quantized input."""

    @staticmethod
    def _empty_like(linear: nn.Linear) -> 'QuantLinear':
        return QuantLinear(linear.in_features, linear.out_features,
                           bias=linear.bias is not None, device='meta')

    def _float_forward(self, x, w, b):
        return F.linear(x, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_forward(x)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, {self.quant_repr()}'


class QuantAct(nn.Module):
    """A ReLU or ReLU6 module whose output is fake-quantized: how the LAPQ
    reference quantizes activations (``preset='reference'``).

    Its clip is named ``<module>.output``. A module called several times
    (mmcls's ResNet blocks reuse one ReLU) shares one quantizer, as in the
    reference.
    """

    act_slot = 'output'
    weight_quantizer = None

    def __init__(self, act: nn.Module, a_grid: Grid):
        super().__init__()
        if not isinstance(act, ACT_TYPES):
            raise TypeError(f'QuantAct wraps ReLU or ReLU6, not '
                            f'{type(act).__name__}')
        self.act = act
        self.output_quantizer = TensorQuantizer(a_grid)
        self.quant_enabled = True

    @property
    def act_quantizer(self) -> TensorQuantizer:
        return self.output_quantizer

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        # Functional, so an in-place ReLU does not modify the input the
        # module itself is about to receive.
        if isinstance(self.act, nn.ReLU6):
            return F.relu6(x)
        return F.relu(x)

    def state_key(self) -> tuple:
        return (self.quant_enabled, self.output_quantizer.version)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(x)
        return self.output_quantizer(y) if self.quant_enabled else y

    def extra_repr(self) -> str:
        return f'a={self.output_quantizer.extra_repr()} (output)'


class QuantInputMixin:
    """An input quantizer added to a module that has no weight of its own
    (an average pool, a residual block, the folded-BN identity at the end of
    a residual branch): where the integer target needs one more quantized
    tensor, so that a runtime runs the module and the layers around it on
    integers. :func:`quantize_module_input` mixes it into the module's own
    class, so the module keeps its name, its children and its state dict.

    Its clip is named ``<module>.input``, initialised and searched like a
    layer's input clip.
    """

    act_slot = 'input'
    weight_quantizer = None

    @property
    def act_quantizer(self) -> TensorQuantizer:
        return self.input_quantizer

    @staticmethod
    def observe(x: torch.Tensor) -> torch.Tensor:
        return x

    def state_key(self) -> tuple:
        return (self.quant_enabled, self.input_quantizer.version)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        if self.quant_enabled:
            x = self.input_quantizer(x)
        return super().forward(x, *args, **kwargs)

    def extra_repr(self) -> str:
        inner = super().extra_repr()
        quant = f'a={self.input_quantizer.extra_repr()} (input)'
        return f'{inner}, {quant}' if inner else quant


_MIXED_CLASSES = {}


def quantize_module_input(module: nn.Module, a_grid: Grid) -> nn.Module:
    """Give ``module`` an input quantizer on ``a_grid`` in place (see
    :class:`QuantInputMixin`); returns it."""
    cls = type(module)
    if isinstance(module, QUANT_LAYER_TYPES):
        raise ValueError(f'{cls.__name__} is already quantized')
    if cls not in _MIXED_CLASSES:
        _MIXED_CLASSES[cls] = type(f'Quant{cls.__name__}',
                                   (QuantInputMixin, cls), {})
    module.__class__ = _MIXED_CLASSES[cls]
    module.input_quantizer = TensorQuantizer(a_grid)
    module.quant_enabled = True
    return module


def unquantized_class(module: nn.Module) -> type:
    """The class a module had before :func:`quantize_module_input`."""
    cls = type(module)
    return cls.__mro__[2] if isinstance(module, QuantInputMixin) else cls


ACT_TYPES = (nn.ReLU, nn.ReLU6)
POOL_TYPES = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
QUANT_LAYER_TYPES = (QuantConv2d, QuantLinear, QuantAct, QuantInputMixin)
