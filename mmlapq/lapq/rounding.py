"""Loss-aware rounding of a whole quantized model: GPTQ layer after layer in
execution order, each layer's Hessian from its (quantized) inputs with every
layer before it already quantized and rounded."""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from ..quant.gptq import GPTQSettings, HessianAccumulator, gptq_codes
from ..quant.grids import check_choice
from .interrupt import stop_requested
from .objective import CalibrationObjective
from .reconstruction import ReconstructionSettings
from .sequential import walk_sequential


ROUNDING_METHODS = ('nearest', 'gptq', 'adaround')
ROUNDING_ORDERS = ('after_search', 'before_search', 'between_searches')


@dataclass
class RoundingSettings:
    """How weights take their grid points.

    method: 'nearest' (LAPQ as published), 'gptq', or 'adaround' (block
        reconstruction, with QDrop when adaround.drop_prob > 0).
    order: 'before_search': rounding at the layer-wise init's clips, then
        the joint search over the activation clips with the weights as the
        rounding left them (with search.variables='all' a weight clip
        would scale its layer's chosen levels); 'after_search': the joint
        search with nearest rounding, then the rounding at the clips it
        found; 'between_searches': as 'after_search', then a second search
        over the activation clips.
    gptq: :class:`GPTQSettings` fields (damp, block_size, act_order).
    adaround: :class:`ReconstructionSettings` fields (iters, batch_size,
        lr, reg_weight, warmup, beta_start, beta_end, drop_prob, seed).
    """

    method: str = 'nearest'
    order: str = 'before_search'
    gptq: dict = field(default_factory=dict)
    adaround: dict = field(default_factory=dict)

    def __post_init__(self):
        check_choice('rounding.method', self.method, ROUNDING_METHODS)
        check_choice('rounding.order', self.order, ROUNDING_ORDERS)
        for key in ('gptq', 'adaround'):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f'rounding.{key}={getattr(self, key)!r} '
                                 'must be a dict')
        self.gptq_settings = GPTQSettings(**self.gptq)
        self.adaround_settings = ReconstructionSettings(**self.adaround)

    def ignored(self) -> List[str]:
        """The block reconstruction's switches that are on although the
        method does not reconstruct (a ResNet config's
        ``learn_act_steps=True`` under ``--cfg-options
        quantizer.rounding.method=nearest``): what a run says it ignores."""
        if self.method == 'adaround':
            return []
        settings = self.adaround_settings
        switches = [f'rounding.adaround.{key}=True'
                    for key in ('learn_act_steps', 'fisher')
                    if getattr(settings, key)]
        if settings.drop_prob > 0:
            switches.append('rounding.adaround.drop_prob='
                            f'{settings.drop_prob:g}')
        return switches

    @property
    def learned(self) -> bool:
        """Whether a method other than round-to-nearest chooses codes."""
        return self.method != 'nearest'

    def method_settings(self) -> dict:
        """The settings of the chosen method (for the record)."""
        chosen = {'gptq': self.gptq_settings,
                  'adaround': self.adaround_settings}.get(self.method)
        return dict(vars(chosen)) if chosen is not None else {}


def apply_gptq(objective: CalibrationObjective,
               settings: GPTQSettings = GPTQSettings(),
               reduce_sum: Optional[Callable] = None,
               log: Optional[Callable] = None,
               broadcast: Optional[Callable] = None) -> Dict[str, float]:
    """Round every quantized weight of the objective's chain with GPTQ at
    its current clip; the layers keep the codes. Layers wider than
    ``settings.max_columns`` keep nearest rounding (logged). Returns the
    seconds per rounded layer name. On a stop request the layers not
    reached yet keep nearest rounding.

    In a distributed run ``reduce_sum`` sums the Hessians over processes
    and ``broadcast`` gives every process rank 0's codes of each layer
    before the next layer's inputs are measured: ranks on different
    hardware could otherwise round a weight differently (a Cholesky is not
    bit-identical across devices) and drift apart."""
    names = {id(q): n.rsplit('.', 1)[0]
             for n, q in objective.quantizers.items()}
    seconds = {}

    def visit(layer, observe):
        wq = layer.weight_quantizer
        if wq is None:
            return
        t0 = time.perf_counter()
        layer.set_weight_codes(None)
        if stop_requested():
            return
        accumulator = HessianAccumulator(layer)
        if accumulator.dim > settings.max_columns:
            if log:
                log(f'GPTQ: {names[id(wq)]} has {accumulator.dim} input '
                    f'columns, more than gptq.max_columns='
                    f'{settings.max_columns}: nearest rounding', force=True)
            return
        aq = getattr(layer, 'input_quantizer', None)

        def add(x: torch.Tensor) -> None:
            accumulator.add(aq(x) if aq is not None else x)

        observe(add)
        hessian = accumulator.hessian(reduce_sum)
        codes = gptq_codes(layer, hessian, settings)
        if broadcast is not None:
            codes = broadcast(codes)
        layer.set_weight_codes(codes)
        seconds[names[id(wq)]] = time.perf_counter() - t0

    walk_sequential(objective, visit)
    return seconds


def _weight_layers(objective: CalibrationObjective) -> Dict[str, object]:
    """The layers with a weight quantizer, by layer name."""
    names = {id(q): n.rsplit('.', 1)[0]
             for n, q in objective.quantizers.items()}
    return {names[id(layer.weight_quantizer)]: layer
            for layers in objective.step_layers for layer in layers
            if getattr(layer, 'weight_quantizer', None) is not None}


def weight_codes(objective: CalibrationObjective) -> Dict[str, torch.Tensor]:
    """The chosen codes of every layer that has them (CPU copies)."""
    return {name: layer.weight_codes.detach().cpu().clone()
            for name, layer in _weight_layers(objective).items()
            if layer.weight_codes is not None}


def set_weight_codes(objective: CalibrationObjective,
                     codes: Dict[str, torch.Tensor]) -> None:
    """Codes by layer name (from :func:`weight_codes`); other layers round
    to nearest."""
    for name, layer in _weight_layers(objective).items():
        layer.set_weight_codes(codes.get(name))


def clear_rounding(objective: CalibrationObjective) -> None:
    """Back to round-to-nearest on every layer."""
    for layers in objective.step_layers:
        for layer in layers:
            if getattr(layer, 'weight_codes', None) is not None:
                layer.set_weight_codes(None)
