"""Block reconstruction: learn each weight's rounding block by block
(AdaRound, Nagel et al. 2020; BRECQ, Li et al. 2021; QDrop, Wei et al. 2022)
at the clips LAPQ chose.

Blocks are runs of the chain's steps: a step with several weighted layers (a
residual or inverted-residual block) is a block; steps with one (VGG's
ConvModules, a stem conv) or none (ReLUs, pools) are grouped up to and
including the next pooling step, so a VGG block is a stage. Block
by block, in order:

- its inputs come from the quantized network with every earlier block's
  rounding fixed, its targets from the float network (the float block on
  the float inputs);
- the rounding variables of its layers (``quant.adaround``) minimise the
  block's output error, sum of squares per image, plus the annealed
  rounding regulariser, by Adam on random mini-batches of the calibration
  images;
- activations in the block are quantized as they will be at inference,
  with a straight-through gradient; with ``drop_prob`` > 0 (QDrop) each
  element of the block's input and of every activation quantizer's output
  is left unquantized (float) with that probability, at random each
  iteration;
- with ``learn_act_steps`` every activation quantizer in the block learns
  its step jointly with the rounding (LSQ, ``quant.lsq``: started at the
  current clip, Adam at its own rate ``act_lr``), and keeps the learned
  clip: the search, the guard, the checkpoint and the export see it as any
  other clip;
- with ``fisher`` (BRECQ's Fisher-weighted block loss) each output
  element's squared error is weighted by the squared gradient of the float
  network's cross-entropy with respect to it, on that image (normalised to
  mean 1 per block), so the block spends its freedom where the loss looks;
- the layers keep the hard codes (like GPTQ's: saved, reloaded and
  exported the same way).

Each block's record says where its output error comes from: the error of
the float block on the quantized inputs (what the earlier blocks left),
and the error with the block's weights alone quantized and with its
activations alone (both on float inputs), before and after.
"""
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..quant.adaround import SoftRounding, beta_schedule
from ..quant.control import (activation_quantizers, float_activations,
                             float_weights, quant_layers,
                             quantization_disabled)
from ..quant.grids import check_type
from ..quant.lsq import LearnedStep
from .interrupt import stop_requested
from .objective import CalibrationObjective, NonFiniteLossError

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
          nn.AdaptiveMaxPool2d)


@dataclass
class ReconstructionSettings:
    """Settings of ``rounding.method='adaround'`` (``rounding.adaround``)."""

    iters: int = 500            # optimiser steps per block (papers: 20000)
    batch_size: int = 32
    # Adam on the rounding variables; the papers' 1e-3 is for 20000
    # iterations: with 500, 1e-2 (tests/test_lapq/test_reconstruction.py)
    lr: float = 1e-2
    reg_weight: float = 0.01    # lambda of the rounding regulariser
    warmup: float = 0.2         # fraction of iters without the regulariser
    beta_start: float = 20.0
    beta_end: float = 2.0
    drop_prob: float = 0.0      # QDrop: 0.5; 0: activations always quantized
    seed: int = 0
    # LSQ: learn every activation step in the block with the rounding, by
    # Adam at act_lr on the log of the clip (a relative rate)
    learn_act_steps: bool = False
    act_lr: float = 1e-3
    # BRECQ: weight the block's output error by the squared gradient of the
    # float network's loss w.r.t. that output
    fisher: bool = False

    def __post_init__(self):
        for key in ('iters', 'batch_size', 'seed'):
            check_type(f'adaround.{key}', getattr(self, key), int)
        for key in ('lr', 'reg_weight', 'warmup', 'beta_start', 'beta_end',
                    'drop_prob', 'act_lr'):
            check_type(f'adaround.{key}', getattr(self, key), float)
        check_type('adaround.learn_act_steps', self.learn_act_steps, bool)
        check_type('adaround.fisher', self.fisher, bool)
        if self.iters < 0 or self.batch_size < 1:
            raise ValueError('adaround.iters must be >= 0 and '
                             'adaround.batch_size >= 1')
        if not 0.0 <= self.drop_prob < 1.0:
            raise ValueError(f'adaround.drop_prob={self.drop_prob} must be '
                             'in [0, 1)')
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f'adaround.warmup={self.warmup} must be in '
                             '[0, 1)')
        if not self.lr > 0:
            raise ValueError(f'adaround.lr={self.lr} must be > 0')
        if not self.act_lr > 0:
            raise ValueError(f'adaround.act_lr={self.act_lr} must be > 0')


def reconstruction_blocks(steps: Sequence[nn.Module]
                          ) -> List[Tuple[int, int]]:
    """[start, end) ranges of steps, each with at least one quantized
    weight (see the module doc)."""
    blocks, start, has_weights = [], 0, False
    for i, step in enumerate(steps):
        weighted = _weighted_layers(step)
        # one weighted layer (a conv, or mmcv's ConvModule around one)
        single = len(weighted) == 1
        if weighted and not single and has_weights:
            blocks.append((start, i))  # a composite step is its own block
            start = i
        has_weights = has_weights or bool(weighted)
        closes = (weighted and not single) or isinstance(step, _POOLS)
        if closes and has_weights:
            blocks.append((start, i + 1))
            start, has_weights = i + 1, False
    if start < len(steps):
        if has_weights or not blocks:
            blocks.append((start, len(steps)))
        else:  # trailing steps without weights join the last block
            blocks[-1] = (blocks[-1][0], len(steps))
    return blocks


class _Block(nn.Module):
    def __init__(self, steps: Sequence[nn.Module]):
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x):
        for step in self.steps:
            x = step(x)
        return x


def _weighted_layers(module: nn.Module) -> List[nn.Module]:
    return [m for m in quant_layers(module).values()
            if getattr(m, 'weight_quantizer', None) is not None]


def _ste_hooks(quantizers, drop_prob: float, generator_state) -> list:
    """Straight-through gradients at every activation quantizer (a learned
    step's quantizer has its own, see ``quant.lsq``), and QDrop's random
    float elements."""
    def hook(module, inputs, output):
        x = inputs[0]
        if module.__dict__.get('learned_step') is not None:
            out = output
        else:
            out = x + (output - x).detach()
        if drop_prob > 0:
            keep_float = torch.rand(x.shape, generator=generator_state,
                                    device='cpu').to(x.device) < drop_prob
            out = torch.where(keep_float, x, out)
        return out
    return [q.register_forward_hook(hook) for q in quantizers]


def _run(block: nn.Module, batches: List[torch.Tensor]) -> List[torch.Tensor]:
    with torch.no_grad():
        return [block(x) for x in batches]


def reconstruct(objective: CalibrationObjective,
                settings: ReconstructionSettings,
                log: Optional[Callable] = None,
                broadcast: Optional[Callable] = None) -> dict:
    """Learn the rounding of every quantized weight of the objective's
    chain at its current clips (see the module doc); the layers keep the
    codes. Returns a record: per block its steps, the output error (mean
    per image) with nearest rounding and after, and seconds.

    ``broadcast`` (distributed runs): every process takes rank 0's codes
    of each block before the next block's inputs are computed."""
    steps = objective.steps
    blocks = reconstruction_blocks(steps)
    generator = torch.Generator().manual_seed(settings.seed)
    objective.set_train_mode(False)
    fp_inputs = list(objective.calib.inputs)
    q_inputs = list(objective.calib.inputs)
    records = []
    start_clips = objective.clips()
    start_codes = {layer: layer.weight_codes for layers in
                   objective.step_layers for layer in layers
                   if getattr(layer, 'weight_quantizer', None) is not None}
    try:
        _reconstruct_blocks(objective, blocks, settings, generator,
                            fp_inputs, q_inputs, records, log, broadcast)
    except BaseException:
        # The model as it was before (an error ends the run: a caller that
        # catches it gets the model back, not half-learned blocks).
        for layer, codes in start_codes.items():
            layer.set_weight_codes(codes)
        objective.set_clips(start_clips)
        objective.clear_cache()
        raise
    objective.clear_cache()
    return dict(blocks=records)


def _reconstruct_blocks(objective, blocks, settings, generator, fp_inputs,
                        q_inputs, records, log, broadcast) -> None:
    steps = objective.steps
    for index, (start, end) in enumerate(blocks):
        t0 = time.perf_counter()
        block = _Block(steps[start:end]).eval()
        layers = _weighted_layers(block)
        with quantization_disabled(block):
            targets = _run(block, fp_inputs)
        for layer in layers:
            layer.set_weight_codes(None)
        acts = activation_quantizers(block)
        learned = [q for q in acts if LearnedStep.fits(q)] \
            if settings.learn_act_steps else []
        steps_before = [float(q.alpha) for q in learned]
        before = _error(_run(block, q_inputs), targets)
        shares_before = _error_shares(block, fp_inputs, targets)
        with quantization_disabled(block):  # the earlier blocks' error
            inherited = _error(_run(block, q_inputs), targets)
        if settings.iters > 0 and layers and not stop_requested():
            weights = None
            if settings.fisher:
                weights = output_sensitivity(steps[end:], targets,
                                             objective.calib.labels)
            _optimise(block, layers, acts, learned, fp_inputs, q_inputs,
                      targets, weights, settings, generator)
        if broadcast is not None:
            for layer in layers:
                if layer.weight_codes is not None:
                    layer.set_weight_codes(broadcast(layer.weight_codes))
            for q in learned:
                q.set_alpha(broadcast(q.alpha))
        q_outputs = _run(block, q_inputs)
        after = _error(q_outputs, targets)
        shares = _error_shares(block, fp_inputs, targets)
        record = dict(steps=[start, end], layers=len(layers),
                      error_nearest=before, error=after,
                      inputs_only=inherited,
                      weights_only=[shares_before[0], shares[0]],
                      activations_only=[shares_before[1], shares[1]])
        if settings.learn_act_steps:
            record['act_clip_ratios'] = [
                float(q.alpha) / a for q, a in zip(learned, steps_before)]
        record['seconds'] = time.perf_counter() - t0
        records.append(record)
        if log:
            log(f'reconstruction block {index + 1}/{len(blocks)} (steps '
                f'{start}..{end - 1}, {len(layers)} layers): output error '
                f'{before:.4g} -> {after:.4g} (inputs alone '
                f'{inherited:.4g}, weights alone '
                f'{shares_before[0]:.4g} -> {shares[0]:.4g}, activations '
                f'alone {shares_before[1]:.4g} -> {shares[1]:.4g}), '
                f'{record["seconds"]:.1f} s')
        # The next block's inputs: the float block's outputs are its
        # targets, the quantized block's were just computed.
        fp_inputs, q_inputs = targets, q_outputs


def _error(outputs: List[torch.Tensor], targets: List[torch.Tensor]
           ) -> float:
    """Mean over images of the summed squared output error."""
    total, count = 0.0, 0
    for out, y in zip(outputs, targets):
        total += float((out - y).float().pow(2).flatten(1).sum())
        count += out.shape[0]
    return total / max(count, 1)


def _error_shares(block: nn.Module, inputs: List[torch.Tensor],
                  targets: List[torch.Tensor]) -> Tuple[float, float]:
    """The block's output error on float inputs with its weights alone
    quantized, and with its activations alone."""
    with float_activations(block):
        weights = _error(_run(block, inputs), targets)
    with float_weights(block):
        activations = _error(_run(block, inputs), targets)
    return weights, activations


def output_sensitivity(rest: Sequence[nn.Module],
                       outputs: List[torch.Tensor],
                       labels: List[torch.Tensor]) -> List[torch.Tensor]:
    """Per element of a block's float outputs, the squared gradient of the
    float network's cross-entropy (``rest``: the steps after the block)
    with respect to it, on each image; normalised to mean 1 over the
    calibration set (the diagonal Fisher weights of BRECQ's block loss)."""
    squares = []
    with quantization_disabled(nn.ModuleList(rest)), torch.enable_grad():
        for z, y in zip(outputs, labels):
            z = z.detach().requires_grad_()
            x = z.clone()  # an in-place first step must not touch the leaf
            for step in rest:
                x = step(x)
            loss = F.cross_entropy(x.float(), y, reduction='sum')
            grad, = torch.autograd.grad(loss, z)
            squares.append(grad.detach().pow(2))
    mean = sum(float(g.sum()) for g in squares) / max(
        sum(g.numel() for g in squares), 1)
    return [g / mean for g in squares] if mean > 0 else \
        [torch.ones_like(g) for g in squares]


_FINITE_EVERY = 25  # reconstruction steps between looks at the loss


def _check_finite(finite: torch.Tensor, it: int,
                  settings: ReconstructionSettings, steps: bool) -> None:
    """NonFiniteLossError (one line, naming the rates) when a block loss
    so far was NaN or infinite."""
    if not bool(finite):
        raise NonFiniteLossError(
            f'the block reconstruction\'s loss was not finite by iteration '
            f'{it}: lower rounding.adaround.lr ({settings.lr:g})' +
            (f' or adaround.act_lr ({settings.act_lr:g})' if steps else ''))


def _optimise(block, layers, acts, learned_acts, fp_inputs, q_inputs,
              targets, weights, settings: ReconstructionSettings,
              generator) -> None:
    fp_all, q_all = torch.cat(fp_inputs), torch.cat(q_inputs)
    target_all = torch.cat(targets)
    weight_all = None if weights is None else torch.cat(weights)
    rounding = [SoftRounding(layer) for layer in layers]
    learned = {q: LearnedStep(q) for q in learned_acts}
    hooks = []
    n = q_all.shape[0]
    try:
        for layer, soft in zip(layers, rounding):
            soft.to(layer.weight.device)
            layer.set_soft_rounding(soft)
        for q, step in learned.items():
            q.set_learned_step(step)
        groups = [dict(params=[soft.v for soft in rounding], lr=settings.lr)]
        if learned:
            groups.append(dict(params=[s.log_ratio for s in learned.values()],
                               lr=settings.act_lr))
        optimiser = torch.optim.Adam(groups)
        hooks = _ste_hooks(acts, settings.drop_prob, generator)
        # Whether every loss so far was finite, kept on the device and
        # looked at every _FINITE_EVERY steps (a look is a device sync).
        finite = torch.ones((), dtype=torch.bool, device=q_all.device)
        with torch.enable_grad():
            for it in range(settings.iters):
                if stop_requested():
                    break
                idx = torch.randint(0, n, (min(settings.batch_size, n), ),
                                    generator=generator).to(q_all.device)
                x = q_all[idx]
                if settings.drop_prob > 0:
                    use_fp = torch.rand(x.shape, generator=generator).to(
                        x.device) < settings.drop_prob
                    x = torch.where(use_fp, fp_all[idx], x)
                out = block(x)
                squares = (out - target_all[idx]).float().pow(2)
                if weight_all is not None:
                    squares = squares * weight_all[idx]
                loss = squares.flatten(1).sum(1).mean()
                finite &= torch.isfinite(loss.detach())
                if it % _FINITE_EVERY == 0:
                    _check_finite(finite, it, settings, bool(learned))
                beta = beta_schedule(it, settings.iters, settings.warmup,
                                     (settings.beta_start, settings.beta_end))
                if beta > 0:
                    loss = loss + settings.reg_weight * sum(
                        soft.regularizer(beta) for soft in rounding)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                for step in learned.values():
                    step.bound()
        _check_finite(finite, settings.iters, settings, bool(learned))
    finally:
        # Every hook and reference off first: nothing below may leave one.
        for h in hooks:
            h.remove()
        for layer in layers:
            layer.set_soft_rounding(None)
        for q in learned:
            q.set_learned_step(None)
    for layer, soft in zip(layers, rounding):
        layer.set_weight_codes(soft.hard_codes().to(layer.weight.dtype))
    for q, step in learned.items():
        q.set_alpha(step.alpha().detach())
