"""Layer-wise clip initialisation of a whole quantized model.

Two modes (LAPQ.md section 4):

- ``sequential`` (the reference's): layer after layer in execution order,
  each activation histogram is gathered with every layer that ran before it
  already quantized, so each clip sees the error of the ones before it. This
  holds on any model (see ``sequential.walk_sequential``).
- ``independent``: every histogram comes from one float pass; the statistics
  are gathered once and reused for every p, which makes a p sweep cheap.

Weights never depend on the data: their clippers are built once and reused.
"""
from collections import OrderedDict  # noqa: F401 (type hint)
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from ..quant.clip_init import WeightClipper, activation_clip
from ..quant.control import quantization_disabled
from ..quant.grids import Grid, check_type
from ..quant.histogram import AbsHistogram
from .objective import CalibrationObjective
from .sequential import walk_sequential

INIT_MODES = ('sequential', 'independent')


@dataclass
class InitSettings:
    method: str = 'lp'        # max | lp | aciq | percentile
    p: Optional[float] = None  # None: choose p by the sweep (method 'lp')
    p_grid: Sequence[float] = tuple(float(v) for v in torch.linspace(2, 4, 10))
    mode: str = 'sequential'
    percentile: float = 99.99
    aciq_distribution: str = 'laplace'
    hist_bins: int = 2048

    def __post_init__(self):
        from ..quant.clip_init import ACIQ_DISTRIBUTIONS, INIT_METHODS
        if self.p is not None:
            check_type('init.p', self.p, float)
        check_type('init.percentile', self.percentile, float)
        check_type('init.hist_bins', self.hist_bins, int)
        if isinstance(self.p_grid, (str, bytes)) or not all(
                isinstance(p, (int, float)) and not isinstance(p, bool)
                for p in self.p_grid):
            raise ValueError(f'init.p_grid={self.p_grid!r} must be a list '
                             'of numbers, e.g. [2.0, 3.0, 4.0]')
        if self.method not in INIT_METHODS:
            raise ValueError(f'init method {self.method!r} is unknown: use '
                             f'one of {", ".join(INIT_METHODS)}')
        if self.mode not in INIT_MODES:
            raise ValueError(f'init mode {self.mode!r} is unknown: use one '
                             f'of {", ".join(INIT_MODES)}')
        if self.aciq_distribution not in ACIQ_DISTRIBUTIONS:
            raise ValueError(f'aciq_distribution {self.aciq_distribution!r}'
                             f' is unknown: use {ACIQ_DISTRIBUTIONS}')
        self.p_grid = tuple(float(p) for p in self.p_grid)
        if self.method == 'lp' and self.p is None and len(self.p_grid) < 3:
            raise ValueError('p_grid needs at least 3 values to fit p')
        for p in ([self.p] if self.p is not None else []) + list(self.p_grid):
            if p < 1:
                raise ValueError(f'p={p} is not supported: use p >= 1')
        if not 0 < self.percentile <= 100:
            raise ValueError(f'percentile={self.percentile} must be in '
                             '(0, 100]')


class ClipInitializer:
    """Sets layer-wise clips on the objective's model for a method and p."""

    def __init__(self, objective: CalibrationObjective, settings: InitSettings,
                 auto_sign: bool = True, reduce_hist=None):
        self.objective = objective
        self.settings = settings
        self.auto_sign = auto_sign
        self.reduce_hist = reduce_hist  # distributed: merge across ranks
        self.layers = [layer for layers in objective.step_layers
                       for layer in layers]
        self._weight_clippers: Dict[int, WeightClipper] = {}
        # max |x| of every quantized tensor (by quantizer id), for reports.
        self.max_abs: Dict[int, float] = {}
        self._float_hists: Optional[Dict[int, AbsHistogram]] = None

    # -- pieces -----------------------------------------------------------
    def _weight_clipper(self, layer) -> WeightClipper:
        key = id(layer)
        if key not in self._weight_clippers:
            self._weight_clippers[key] = WeightClipper(
                layer.weight, layer.weight_quantizer.channel_axis is not None)
        return self._weight_clippers[key]

    def _set_weight_clip(self, layer, p: float) -> None:
        wq = layer.weight_quantizer
        if wq is None:
            return
        s = self.settings
        clipper = self._weight_clipper(layer)
        wq.set_alpha(clipper.clip(wq.grid, s.method, p, s.percentile,
                                  s.aciq_distribution))
        self.max_abs[id(wq)] = float(clipper.absw.max())

    def _set_input_clip(self, layer, hist: AbsHistogram, p: float) -> None:
        aq = layer.act_quantizer
        if aq is None:
            return
        if self.auto_sign:
            kind = aq.signed_kind if hist.has_negative else 'unsigned'
            aq.set_grid(Grid(aq.bits, kind))
        s = self.settings
        aq.set_alpha(activation_clip(hist, aq.grid, s.method, p, s.percentile,
                                     s.aciq_distribution))
        self.max_abs[id(aq)] = hist.max_abs

    def _collect(self, layers: List, batches, start_step: int,
                 end_step: int) -> Dict[int, AbsHistogram]:
        """Histograms of the inputs of ``layers`` while steps
        ``start_step..end_step-1`` run on ``batches``."""
        hists = {id(m): AbsHistogram(self.settings.hist_bins) for m in layers
                 if m.act_quantizer is not None}

        def hook(layer, inputs):
            hists[id(layer)].update(layer.observe(inputs[0]))

        handles = [m.register_forward_pre_hook(hook) for m in layers
                   if id(m) in hists]
        try:
            with torch.no_grad():
                for x in batches:
                    for step in self.objective.steps[start_step:end_step]:
                        x = step(x)
        finally:
            for h in handles:
                h.remove()
        if self.reduce_hist is not None:
            hists = {k: self.reduce_hist(h) for k, h in hists.items()}
        return hists

    # -- public -----------------------------------------------------------
    def clip_maxima(self) -> Dict[str, float]:
        """max |x| of each tensor seen by the last initialisation."""
        return {n: self.max_abs[id(q)]
                for n, q in self.objective.quantizers.items()
                if id(q) in self.max_abs}

    def __call__(self, p: Optional[float] = None
                 ) -> 'OrderedDict[str, torch.Tensor]':
        """Initialise every clip (for Lp: with exponent ``p``); returns the
        clips by quantizer name."""
        s = self.settings
        p = p if p is not None else (s.p if s.p is not None else 2.0)
        self.objective.set_train_mode(False)
        if s.mode == 'independent':
            self._init_independent(p)
        else:
            self._init_sequential(p)
        return self.objective.clips()

    def _init_independent(self, p: float) -> None:
        if self._float_hists is None:
            with quantization_disabled(torch.nn.ModuleList(
                    self.objective.steps)):
                self._float_hists = self._collect(
                    self.layers, self.objective.calib.inputs, 0,
                    len(self.objective.steps))
        for layer in self.layers:
            self._set_weight_clip(layer, p)
            if id(layer) in self._float_hists:
                self._set_input_clip(layer, self._float_hists[id(layer)], p)

    def _init_sequential(self, p: float) -> None:
        def set_weights(order):
            for layer in order:
                self._set_weight_clip(layer, p)  # weights need no data

        def visit(layer, observe):
            if layer.act_quantizer is None:
                return
            hist = AbsHistogram(self.settings.hist_bins)
            observe(lambda x: hist.update(layer.observe(x)))
            if self.reduce_hist is not None:
                hist = self.reduce_hist(hist)
            self._set_input_clip(layer, hist, p)

        walk_sequential(self.objective, visit, set_weights)
