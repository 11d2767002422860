"""The calibration objective: mean cross-entropy of the quantized model on the
fixed calibration set, made cheap to evaluate many times.

The model is given as a chain of steps (modules applied one after another).
Each quantized layer belongs to one step. An evaluation:

- re-quantizes only the weights whose clips changed (the layers cache the
  rest),
- starts from the cached input of the first step whose layers changed and runs
  only the rest of the chain. Powell's sweep moves one clip at a time, so on a
  chain like VGG most evaluations skip the early layers.

A cache entry is valid while every layer before it has the state (clips,
weights, on/off) it had when the entry was made: a state key per layer makes
that check exact, so any change of the model, by the search or by anyone
else, is seen. A model that is not a chain is one step: still correct, just
uncached.
"""
import logging
import time
from collections import OrderedDict
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..quant.control import layer_quantizers, quant_layers
from ..quant.precision import wide_dtype
from .calib import CalibrationSet


class NonFiniteLossError(RuntimeError):
    """The calibration loss is NaN or infinite."""


class _Entry:
    __slots__ = ('keys', 'batches', 'nbytes')

    def __init__(self, keys: tuple):
        self.keys, self.batches, self.nbytes = keys, [], 0


class CalibrationObjective:
    """Loss of the (quantized) chain on a calibration set.

    Args:
        steps: the chain; ``steps[-1]`` must return logits.
        calib: the calibration set.
        cache_bytes: memory allowed for cached step inputs (beyond the
            calibration inputs themselves). 0 disables the chain cache.
        max_entries: how many step inputs to keep at once (least recently
            used go first).
        reduce_fn: optional callable (sum, count) -> (sum, count) that sums
            over processes, for distributed calibration.
    """

    def __init__(self, steps: Sequence[nn.Module], calib: CalibrationSet,
                 model: Optional[nn.Module] = None,
                 cache_bytes: int = 4 << 30, max_entries: int = 2,
                 reduce_fn=None):
        self.steps = list(steps)
        self.calib = calib
        self.cache_bytes = cache_bytes
        self.max_entries = max_entries
        self.reduce_fn = reduce_fn
        self.step_layers: List[List[nn.Module]] = [
            list(quant_layers(step).values()) for step in self.steps]
        # Quantizers in chain order, named as in ``model`` (the names of the
        # report and of the checkpoint); the search's variables.
        chain = nn.ModuleList(self.steps)
        names = {id(m): n for n, m in quant_layers(model or chain).items()}
        self.quantizers = OrderedDict()
        self.quantizer_step = {}
        for i, layers in enumerate(self.step_layers):
            for layer in layers:
                name = names.get(id(layer))
                if name is None:
                    raise ValueError('a quantized layer of the chain is not a '
                                     'submodule of the model')
                for qname, q in layer_quantizers(name, layer).items():
                    self.quantizers[qname] = q
                    self.quantizer_step[qname] = i
        if not self.quantizers:
            raise ValueError('the chain has no quantized layer')
        self._cache: 'OrderedDict[int, _Entry]' = OrderedDict()
        self._last_keys: Optional[list] = None
        self._last_loss: Optional[float] = None
        self.num_evals = 0
        self.seconds = 0.0
        self.steps_run = 0

    # -- state ------------------------------------------------------------
    def _step_keys(self) -> list:
        return [tuple(layer.state_key() for layer in layers)
                for layers in self.step_layers]

    def clips(self) -> 'OrderedDict[str, torch.Tensor]':
        return OrderedDict((n, q.alpha.detach().clone())
                           for n, q in self.quantizers.items())

    def set_clips(self, clips) -> None:
        for name, alpha in clips.items():
            self.quantizers[name].set_alpha(alpha)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._last_keys = self._last_loss = None

    def _valid_start(self, keys: list) -> int:
        best = 0
        for index, entry in self._cache.items():
            if index > best and entry.keys == tuple(keys[:index]):
                best = index
        return best

    # -- evaluation -------------------------------------------------------
    def set_train_mode(self, mode: bool) -> None:
        for step in self.steps:
            step.train(mode)

    @torch.no_grad()
    def run_from(self, start_step: int, batch_inputs: Sequence[torch.Tensor]
                 ) -> List[torch.Tensor]:
        """Run steps ``start_step..`` on each batch (no caching)."""
        outs = []
        for x in batch_inputs:
            for step in self.steps[start_step:]:
                x = step(x)
            outs.append(x)
        return outs

    @torch.no_grad()
    def loss_from(self, start_step: int,
                  batch_inputs: Sequence[torch.Tensor]) -> float:
        """Mean cross-entropy (over every process) of steps
        ``start_step..`` run on ``batch_inputs``, the inputs of that step
        for the calibration batches (uncached, uncounted)."""
        total = None
        for x, y in zip(self.run_from(start_step, batch_inputs),
                        self.calib.labels):
            batch = F.cross_entropy(x.float(), y, reduction='sum')
            batch = batch.to(wide_dtype(batch.device))
            total = batch if total is None else total + batch
        count = self.calib.num_images
        if self.reduce_fn is not None:
            total, count = self.reduce_fn(total, count)
        return float(total) / count

    @torch.no_grad()
    def image_losses(self) -> torch.Tensor:
        """Cross-entropy of each calibration image of this process at the
        model's current clips (uncached), in the set's order."""
        self.set_train_mode(False)
        logits = self.run_from(0, self.calib.inputs)
        return torch.cat([F.cross_entropy(x.float(), y, reduction='none')
                          for x, y in zip(logits, self.calib.labels)])

    @torch.no_grad()
    def loss(self, use_cache: bool = True) -> float:
        """Mean cross-entropy at the model's current clips."""
        t0 = time.perf_counter()
        self.set_train_mode(False)
        keys = self._step_keys()
        if use_cache and keys == self._last_keys:
            return self._last_loss
        n = len(self.steps)
        start = self._valid_start(keys) if use_cache else 0
        first_changed = 0
        if self._last_keys is not None:
            first_changed = next((i for i in range(n)
                                  if keys[i] != self._last_keys[i]), n)
        store_at = first_changed if (use_cache and self.cache_bytes > 0
                                     and start < first_changed < n) else None
        entry = _Entry(tuple(keys[:store_at])) if store_at is not None else None
        total = None
        for b, y in enumerate(self.calib.labels):
            x = self._cache[start].batches[b] if start else self.calib.inputs[b]
            for i in range(start, n):
                if i == store_at and entry is not None:
                    entry.batches.append(x)
                    entry.nbytes += x.numel() * x.element_size()
                    if entry.nbytes > self.cache_bytes:
                        entry = None  # too big: run uncached from here
                x = self.steps[i](x)
            batch_loss = F.cross_entropy(x.float(), y, reduction='sum')
            batch_loss = batch_loss.to(wide_dtype(batch_loss.device))
            total = batch_loss if total is None else total + batch_loss
        self.steps_run += (n - start) * len(self.calib.labels)
        count = self.calib.num_images
        if self.reduce_fn is not None:
            total, count = self.reduce_fn(total, count)
        value = float(total) / count
        if entry is not None:
            self._cache[store_at] = entry
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        if start in self._cache:
            self._cache.move_to_end(start)
        if value != value or value in (float('inf'), float('-inf')):
            raise NonFiniteLossError(
                f'the calibration loss is {value}: check that the checkpoint '
                'fits the model and the data pipeline normalises the images')
        self._last_keys, self._last_loss = keys, value
        self.num_evals += 1
        self.seconds += time.perf_counter() - t0
        return value


def chain_of_sequential(model: nn.Sequential) -> List[nn.Module]:
    """The chain of a plain nn.Sequential: its children."""
    return list(model.children())


class FullForward(nn.Module):
    """One-step chain for a model that is not a chain: ``fn(model, x)``."""

    def __init__(self, model: nn.Module, fn=None):
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, x):
        return self.fn(self.model, x) if self.fn else self.model(x)


def log_every(logger: Optional[logging.Logger], seconds: float):
    """A callable that logs its message at most once per ``seconds``."""
    last = [time.perf_counter()]

    def log(msg: str, force: bool = False) -> None:
        now = time.perf_counter()
        if logger is not None and (force or now - last[0] >= seconds):
            last[0] = now
            logger.info(msg)

    return log
