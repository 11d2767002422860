"""Uniform quantization grids: the one place that says how a value is rounded.

Three kinds (shared/docs/LAPQ.md section 2), each defined by a clip ``alpha``:

- ``signed``: integers -(2^(b-1)-1) .. 2^(b-1)-1 times ``alpha / (2^(b-1)-1)``.
  Zero is exact, so the result maps to INT kernels. Default for weights.
- ``midrise``: the reference implementation's weight grid, 2^b levels spread
  evenly over [-alpha, alpha] with step ``2*alpha / (2^b-1)``; no exact zero.
- ``unsigned``: 0 .. 2^b-1 times ``alpha / (2^b-1)``, for inputs that are never
  negative (after ReLU).
- ``signed_full``: the ``signed`` grid's step with the whole two's-complement
  range, -2^(b-1) .. 2^(b-1)-1: how the integer target quantizes signed
  activations, so that an 8-bit one fills its integer type and runtimes need
  no clip of the codes.

Rounding is ``torch.round`` (ties to even) of ``x / step``: a division, as
ONNX QuantizeLinear computes it, everywhere (activations, per-tensor and
per-channel weights, GPTQ, integer codes). torch's fused fake_quantize ops
multiply by ``1 / step`` instead, which rounds the other way for some values
at half steps; they are not used.
"""
from dataclasses import dataclass
from typing import Union

import torch

MIN_BITS, MAX_BITS = 2, 16
GRID_KINDS = ('signed', 'midrise', 'unsigned', 'signed_full')
Alpha = Union[float, torch.Tensor]


def check_bits(bits: object, what: str = 'bits') -> int:
    """Return ``bits`` if it is an int in [2, 16], else raise a clear error."""
    if isinstance(bits, bool) or not isinstance(bits, int) \
            or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f'{what}={bits!r} is not supported: use an integer '
                         f'from {MIN_BITS} to {MAX_BITS}')
    return bits


def check_type(key: str, value, kind: type) -> None:
    """A clear error for a setting of the wrong type (``--cfg-options``
    gives strings for anything it cannot parse)."""
    if kind in (int, float) and isinstance(value, bool):
        ok = False
    elif kind is float:
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, kind)
    if not ok:
        example = {int: '64', float: '2.5', bool: 'True'}.get(kind, '...')
        raise ValueError(f'{key}={value!r} must be of type {kind.__name__}: '
                         f'set it like {key.split(".")[-1]}={example}')


def check_choice(key: str, value, choices) -> None:
    """A clear error for a setting outside its allowed values."""
    if value not in choices:
        raise ValueError(f'{key}={value!r} is unknown: use one of '
                         f'{", ".join(map(str, choices))}')


@dataclass(frozen=True)
class Grid:
    """A uniform grid of ``bits`` bits of one ``kind`` (see module doc)."""

    bits: int
    kind: str = 'signed'

    def __post_init__(self):
        check_bits(self.bits)
        if self.kind not in GRID_KINDS:
            raise ValueError(f'grid kind {self.kind!r} is unknown: use one of '
                             f'{", ".join(GRID_KINDS)}')

    @property
    def num_steps(self) -> int:
        """Number of steps between the lowest and the highest level."""
        if self.kind == 'signed':
            return 2**self.bits - 2
        return 2**self.bits - 1

    @property
    def qmax(self) -> int:
        """Largest integer level (signed and unsigned grids)."""
        if self.kind in ('signed', 'signed_full'):
            return 2**(self.bits - 1) - 1
        return 2**self.bits - 1

    @property
    def qmin(self) -> int:
        """Lowest integer level (signed and unsigned grids)."""
        return {'signed': -self.qmax, 'signed_full': -self.qmax - 1}.get(
            self.kind, 0)

    @property
    def two_sided(self) -> bool:
        return self.kind != 'unsigned'

    def step(self, alpha: Alpha) -> Alpha:
        span = 2 * alpha if self.two_sided else alpha
        if self.kind == 'signed_full':  # the signed grid's step, exactly
            return span / (2 * self.qmax)
        return span / self.num_steps

    def quantize(self, x: torch.Tensor, alpha: Alpha) -> torch.Tensor:
        """Fake-quantize ``x``: round to the grid of clip ``alpha``.

        ``alpha`` is a float or a tensor that broadcasts against ``x`` (one
        clip per output channel for per-channel weights).
        """
        step = self.step(alpha)
        if self.kind == 'midrise':
            q = torch.round(torch.clamp((x + alpha) / step, 0, self.num_steps))
            return q * step - alpha
        q = torch.round(x / step)
        return q.clamp_(self.qmin, self.qmax).mul_(step)

    def to_codes(self, x: torch.Tensor, alpha: Alpha) -> torch.Tensor:
        """The integer level of each value (as floats): qmin..qmax for
        ``signed``, ``signed_full`` and ``unsigned``, 0..num_steps for
        ``midrise``."""
        step = self.step(alpha)
        if self.kind == 'midrise':
            return torch.round(torch.clamp((x + alpha) / step, 0,
                                           self.num_steps))
        return torch.clamp(torch.round(x / step), self.qmin, self.qmax)

    def from_codes(self, codes: torch.Tensor, alpha: Alpha) -> torch.Tensor:
        """Values of integer levels at clip ``alpha``: ``quantize(x, a) ==
        from_codes(to_codes(x, a), a)``."""
        value = codes * self.step(alpha)
        return value - alpha if self.kind == 'midrise' else value

    def levels(self, alpha: float) -> torch.Tensor:
        """All representable values for clip ``alpha`` (for tests, plots)."""
        n = torch.arange(self.num_steps + 1, dtype=torch.float64)
        if self.kind != 'midrise':
            n = n + self.qmin
        step = self.step(alpha)
        return n * step - (alpha if self.kind == 'midrise' else 0.0)


def settings_from_option(cls, option, key: str, fields: str):
    """The settings an on/off-or-dict option asks for: False/None: off
    (None), True: ``cls()``'s defaults, a dict: these fields of ``cls``."""
    if option is None or option is False:
        return None
    if option is True:
        return cls()
    if isinstance(option, dict):
        return cls(**option)
    raise ValueError(f'{key}={option!r}: use False, True or a dict of '
                     f'{fields}')
