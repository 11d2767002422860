"""Per-tensor sensitivity for mixed precision: how much the
calibration task loss rises when one tensor alone is quantized at a lower
width, everything else staying at the base width (8 bits).

The probe is LAPQ's own loss, not a proxy (HAWQ's Hessian trace, AIMET's
evaluation score): for each candidate width the tensor gets its Lp clip at
that width and the loss of the whole network is measured. Through the
chain: the steps run in the base state, in order, and a probe of a tensor
of step ``i`` runs only the steps from the latest kept step input at or
before ``i``. A step's input for the whole calibration set is kept only
when it fits in ``cache_bytes`` (the chain cache's bound; at most two are
held at once, the kept one and the next); otherwise the probes run from
the last one that fitted, or from the images (``cache_bytes=0``: every
probe from the images, the same numbers, no memory beyond a batch).

A conv that reads its input through its residual block's quantizer at the
base width (``set_input_source``) gets a quantizer of its own for a probe
at another width: what the wrapped model does at that allocation (the conv
requantizes the block's input).

Pure PyTorch; the histograms, clips and losses are summed over processes
through the objective's ``reduce_fn`` and the given ``reduce_hist``.
"""
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..quant.clip_init import WeightClipper, activation_clip
from ..quant.control import quant_layers
from ..quant.grids import Grid
from ..quant.histogram import AbsHistogram
from ..quant.qmodules import TensorQuantizer
from .objective import CalibrationObjective

WEIGHT, INPUT = 'weight', 'input'


@dataclass
class Sensitivity:
    """Loss increases by layer, tensor ('weight' / 'input') and width; the
    base width's increase is 0 by definition."""

    base_loss: float
    base_bits: int
    p: float
    increase: Dict[str, Dict[str, Dict[int, float]]]
    seconds: float = 0.0
    probes: int = 0
    steps_run: int = 0  # chain steps run by the probes (x batches)
    full_steps: int = 0  # what full forwards would have run
    extra: dict = field(default_factory=dict)

    def of(self, layer: str, tensor: str, bits: int) -> float:
        """The increase of one probe (0 where the tensor is not probed)."""
        return self.increase.get(layer, {}).get(tensor, {}).get(bits, 0.0)

    def to_dict(self) -> dict:
        return dict(base_loss=self.base_loss, base_bits=self.base_bits,
                    p=self.p, seconds=self.seconds, probes=self.probes,
                    steps_run=self.steps_run, full_steps=self.full_steps,
                    increase={layer: {t: {str(b): v for b, v in by.items()}
                                      for t, by in tensors.items()}
                              for layer, tensors in self.increase.items()},
                    **self.extra)


class _Probe:
    """Sets one tensor of one layer to a width with its Lp clip, and puts
    the base state back."""

    def __init__(self, layer: nn.Module, tensor: str, p: float,
                 hist: Optional[AbsHistogram] = None):
        self.layer, self.tensor, self.p, self.hist = layer, tensor, p, hist
        # a weight's clip at any width comes from one clipper
        self.clipper = WeightClipper(
            layer.weight, layer.weight_quantizer.channel_axis is not None) \
            if tensor == WEIGHT else None

    def apply(self, bits: int) -> None:
        layer = self.layer
        if self.tensor == WEIGHT:
            wq = layer.weight_quantizer
            self._saved = (wq, wq.grid, wq.alpha.clone())
            wq.set_grid(Grid(bits, wq.grid.kind))
            wq.set_alpha(self.clipper.clip(wq.grid, 'lp', self.p))
            return
        own = layer.input_quantizer
        source = own if own is not None else layer.input_grid_quantizer()
        if own is None:  # reads its block's quantizer: a quantizer of its own
            own = TensorQuantizer(Grid(bits, source.grid.kind))
            own.signed_kind = source.signed_kind
            own.to(source.alpha.device)
            layer.input_quantizer = own
            self._saved = (None, None, None)
        else:
            self._saved = (own, own.grid, own.alpha.clone())
            own.set_grid(Grid(bits, own.grid.kind))
        own.set_alpha(activation_clip(self.hist, own.grid, 'lp', self.p))

    def restore(self) -> None:
        quantizer, grid, alpha = self._saved
        if quantizer is None:
            self.layer.input_quantizer = None
            return
        quantizer.set_grid(grid)
        quantizer.set_alpha(alpha)


def _input_quantizer(layer: nn.Module) -> Optional[TensorQuantizer]:
    if not hasattr(layer, 'input_grid_quantizer'):
        return getattr(layer, 'act_quantizer', None)
    return layer.input_grid_quantizer()


def measure_sensitivity(objective: CalibrationObjective, model: nn.Module,
                        candidates: Dict[str, Dict[str, Sequence[int]]],
                        base_bits: int = 8, p: float = 2.0,
                        cache_bytes: int = 4 << 30, reduce_hist=None,
                        hist_bins: int = 2048,
                        log: Optional[Callable[[str], None]] = None
                        ) -> Sensitivity:
    """The loss increase of every (layer, tensor, width) in ``candidates``
    (``{layer name: {'weight': widths, 'input': widths}}``) on the
    objective's model, whose clips must be initialised at the base width.
    A width equal to the base is not probed (0). ``cache_bytes``: memory
    for one kept step input (see the module doc)."""
    t0 = time.perf_counter()
    layers = quant_layers(model)
    missing = [n for n in candidates if n not in layers]
    if missing:
        raise ValueError(f'no quantized layer named {missing[0]}')
    step_of = {id(m): i for i, step in enumerate(objective.step_layers)
               for m in step}
    by_step: Dict[int, List[str]] = {}
    for name in candidates:
        if id(layers[name]) not in step_of:
            raise ValueError(f'layer {name} is not in the chain')
        by_step.setdefault(step_of[id(layers[name])], []).append(name)
    objective.set_train_mode(False)
    steps, calib = objective.steps, objective.calib
    base_loss = objective.loss_from(0, calib.inputs)
    increase: Dict[str, Dict[str, Dict[int, float]]] = OrderedDict(
        (name, {}) for name in candidates)
    probes = steps_run = 0
    kept_at, kept = 0, list(calib.inputs)  # the latest kept step input
    for i in range(len(steps)):
        names = by_step.get(i, [])
        hists = {name: AbsHistogram(hist_bins) for name in names
                 if candidates[name].get(INPUT)}
        outputs = None
        if hists or cache_bytes > 0:  # histograms, or an input to keep
            with _observing_inputs({layers[n]: hists[n] for n in hists}):
                outputs = _run_keeping(steps[kept_at:i + 1], kept,
                                       cache_bytes, every_batch=bool(hists))
        if reduce_hist is not None:
            hists = {n: reduce_hist(h) for n, h in hists.items()}
        for name in names:
            layer = layers[name]
            for tensor, widths in candidates[name].items():
                if tensor == WEIGHT and layer.weight_quantizer is None or \
                        tensor == INPUT and _input_quantizer(layer) is None:
                    raise ValueError(f'layer {name} has no {tensor} '
                                     'quantizer to probe')
                probe = _Probe(layer, tensor, p, hist=hists.get(name))
                row = increase[name].setdefault(tensor, {})
                for bits in widths:
                    if bits == base_bits:
                        row[bits] = 0.0
                        continue
                    probe.apply(bits)
                    try:
                        loss = objective.loss_from(kept_at, kept)
                    finally:
                        probe.restore()
                    row[bits] = loss - base_loss
                    probes += 1
                    steps_run += len(steps) - kept_at
        if outputs is not None:
            kept_at, kept = i + 1, outputs
        if log and names:
            log(f'sensitivity: step {i + 1}/{len(steps)}, {probes} probes, '
                f'{time.perf_counter() - t0:.1f} s')
    return Sensitivity(base_loss, base_bits, p, increase,
                       time.perf_counter() - t0, probes, steps_run,
                       probes * len(steps))


@torch.no_grad()
def _run_keeping(steps: Sequence[nn.Module], inputs: List[torch.Tensor],
                 cache_bytes: int, every_batch: bool
                 ) -> Optional[List[torch.Tensor]]:
    """Run ``steps`` on the batches of ``inputs``; their outputs while
    their bytes fit in ``cache_bytes``, else None (dropped as soon as they
    do not fit, and the run stops there unless ``every_batch``: the
    histograms of the step's inputs need every batch)."""
    outputs: Optional[List[torch.Tensor]] = []
    nbytes = 0
    for x in inputs:
        for step in steps:
            x = step(x)
        if outputs is None:
            continue
        nbytes += x.numel() * x.element_size()
        if nbytes > cache_bytes:
            outputs = None
            if not every_batch:
                break
        else:
            outputs.append(x)
    return outputs


@contextmanager
def _observing_inputs(hists: Dict[nn.Module, AbsHistogram]):
    """Inside the block, each layer of ``hists`` adds its input (as its
    activation quantizer sees it) to its histogram."""
    def hook(layer, args):
        hists[layer].update(layer.observe(args[0]))

    handles = [layer.register_forward_pre_hook(hook) for layer in hists]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def loss_of_widths(objective: CalibrationObjective, model: nn.Module,
                   widths: Dict[Tuple[str, str], int],
                   p: float = 2.0, reduce_hist=None,
                   hist_bins: int = 2048) -> float:
    """The calibration loss with several tensors at once at other widths
    (``{(layer, 'weight' | 'input'): bits}``), each at its Lp clip, the
    rest at the base state: what the additive model predicts as the sum of
    single probes. The activation histograms are gathered in the base
    state, as the single probes' are."""
    layers = quant_layers(model)
    inputs = [(layers[n], t) for (n, t) in widths if t == INPUT]
    hists = {layer: AbsHistogram(hist_bins) for layer, _ in inputs}
    objective.set_train_mode(False)
    x_all = objective.calib.inputs
    if hists:
        with _observing_inputs(hists):
            objective.run_from(0, x_all)
        if reduce_hist is not None:
            hists = {k: reduce_hist(h) for k, h in hists.items()}
    probes = []
    try:
        for (name, tensor), bits in widths.items():
            layer = layers[name]
            probe = _Probe(layer, tensor, p, hist=hists.get(layer))
            probe.apply(bits)
            probes.append(probe)
        return objective.loss_from(0, x_all)
    finally:
        for probe in reversed(probes):
            probe.restore()
