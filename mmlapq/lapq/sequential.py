"""Visit the quantized layers of a chain one after another, in the order the
model calls them, each time with every layer called before it already
quantized: what the sequential clip init and GPTQ rounding both need.

Inside a step of the chain (the whole model, when it is not a chain) the
order comes from a probe forward with hooks; each observation of a layer
runs the step on its quantized inputs and stops the forward once the layer
has had its last call.
"""
from typing import Callable, List

import torch
import torch.nn as nn

from ..quant.control import quantization_disabled
from .objective import CalibrationObjective

# visit(layer, observe): set the layer up; ``observe(fn)`` calls fn(x) for
# every input x the layer receives over the calibration batches (with the
# layers called before it quantized, it and the later ones in float).
Visit = Callable[[nn.Module, Callable[[Callable[[torch.Tensor], None]], None]],
                 None]


class _StopForward(Exception):
    """Raised by a hook to end a forward whose remaining layers are not
    needed."""


def _step_hooks(layers, hook) -> list:
    return [m.register_forward_pre_hook(hook) for m in dict.fromkeys(layers)]


def call_order(step: nn.Module, layers: List[nn.Module],
               probe: torch.Tensor) -> List[nn.Module]:
    """``layers`` of ``step`` in the order the step calls them (a layer
    called twice appears twice)."""
    calls = []
    handles = _step_hooks(layers, lambda m, _: calls.append(m))
    try:
        with torch.no_grad(), quantization_disabled(step):
            step(probe)
    finally:
        for h in handles:
            h.remove()
    return calls


def _observe(step: nn.Module, layers, target, batches, stop_at: int,
             fn: Callable[[torch.Tensor], None]) -> None:
    position = [0]

    def hook(layer, inputs):
        if position[0] == stop_at:
            raise _StopForward
        position[0] += 1
        if layer is target:
            fn(inputs[0])

    handles = _step_hooks(layers, hook)
    try:
        with torch.no_grad():
            for x in batches:
                position[0] = 0
                try:
                    step(x)
                except _StopForward:
                    pass
    finally:
        for h in handles:
            h.remove()


def walk_sequential(objective: CalibrationObjective, visit: Visit,
                    before_step: Callable[[List[nn.Module]], None] = None
                    ) -> None:
    """Call ``visit`` for each quantized layer in execution order (see the
    module doc); ``before_step(layers)`` runs first for each step's layers
    in call order. Every layer is left quantized."""
    steps, step_layers = objective.steps, objective.step_layers
    batches = list(objective.calib.inputs)
    for i, step in enumerate(steps):
        layers = step_layers[i]
        if layers:
            calls = call_order(step, layers, batches[0])
            order = list(dict.fromkeys(calls))  # unique, by first call
            if before_step is not None:
                before_step(order)
            try:
                for k, layer in enumerate(order):
                    for j, other in enumerate(order):
                        other.quant_enabled = j < k
                    last_call = max(c for c, m in enumerate(calls)
                                    if m is layer)

                    def observe(fn, layer=layer, stop=last_call + 1):
                        _observe(step, layers, layer, batches, stop, fn)

                    visit(layer, observe)
            finally:
                for layer in order:
                    layer.quant_enabled = True
        if i + 1 < len(steps) and any(step_layers[i + 1:]):
            with torch.no_grad():
                batches = [step(x) for x in batches]
        else:
            break
