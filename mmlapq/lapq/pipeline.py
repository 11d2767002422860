"""LAPQ end to end on a wrapped model: initialise, choose p, search jointly,
correct biases; one result object records every stage."""
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from ..quant.bias_correction import empirical_bias_correction
from ..quant.control import quantization_disabled
from .initialize import ClipInitializer, InitSettings
from .calib import CalibrationSet
from .objective import CalibrationObjective, log_every
from .psweep import sweep_p
from .interrupt import stop_requested
from .resume import (SearchStateFile, clips_and_grids,
                     restore_clips_and_grids)
from .guard import paired_difference
from .reconstruction import reconstruct
from .rounding import (RoundingSettings, apply_gptq, set_weight_codes,
                       weight_codes)
from .search import SearchResult, SearchSettings, joint_search


@dataclass
class LapqResult:
    init_method: str
    init_mode: str
    p_star: Optional[float]
    init_loss: float
    final_loss: float
    search: SearchResult
    init_clips: Dict[str, torch.Tensor]
    clips: Dict[str, torch.Tensor]
    p_sweep: Optional[dict] = None
    bias_correction: str = 'none'
    loss_before_bias_correction: Optional[float] = None
    seconds: Dict[str, float] = field(default_factory=dict)
    clip_maxima: Dict[str, float] = field(default_factory=dict)
    fp32_loss: Optional[float] = None
    # method, order, calibration loss before and after the rounding
    rounding: dict = field(default_factory=lambda: dict(method='nearest'))
    resumed: bool = False  # continued from a search state file

    @property
    def func_evals(self) -> int:
        return self.search.func_evals

    def summary(self) -> dict:
        """JSON-ready record (clips as lists)."""
        return dict(
            fp32_calib_loss=self.fp32_loss,
            init=dict(method=self.init_method, mode=self.init_mode,
                      p=self.p_star, calib_loss=self.init_loss,
                      p_sweep=self.p_sweep),
            lapq=dict(method=self.search.method, calib_loss=self.final_loss,
                      search_best_loss=self.search.best_loss,
                      func_evals=self.search.func_evals,
                      seconds=self.search.seconds,
                      ms_per_eval=self.search.ms_per_eval,
                      stopped=self.search.stopped,
                      loss_history=self.search.history,
                      holdout_init_loss=self.search.holdout_init_loss,
                      holdout_loss=self.search.holdout_loss,
                      guard=self.search.guard,
                      guard_checkpoints=self.search.checkpoints,
                      resumed=self.resumed,
                      bias_correction=self.bias_correction,
                      loss_before_bias_correction=(
                          self.loss_before_bias_correction)),
            rounding=self.rounding,
            seconds=self.seconds)


def run_lapq(objective: CalibrationObjective, init: InitSettings,
             search: SearchSettings, bias_correction: str = 'none',
             auto_sign: bool = True,
             logger: Optional[logging.Logger] = None,
             reduce_hist=None, reduce_sum=None,
             rounding: Optional[RoundingSettings] = None,
             holdout: Optional[CalibrationSet] = None,
             broadcast=None,
             state: Optional[SearchStateFile] = None) -> LapqResult:
    """Run every stage on the objective's (already wrapped) model. With
    ``holdout`` (images the search never optimises) the search is guarded
    against fitting the calibration images (see ``search``).

    Distributed: ``reduce_*`` sum over processes; ``broadcast(tensor)``
    returns rank 0's tensor, and every decision a process makes on its own
    from summed floats (clips after the init and after the search, GPTQ
    codes) is replaced by rank 0's, so that processes on different hardware
    cannot disagree.

    ``state``: the search state file (``lapq.resume``): every stage is
    recorded in it, and a stage it already holds is restored instead of
    run again (``--resume``)."""
    rounding = rounding or RoundingSettings()
    learned = rounding.learned
    rounding_record = dict(method=rounding.method)
    log = log_every(logger, search.log_interval)
    for setting in rounding.ignored():
        log(f"{setting} does nothing under rounding.method="
            f"'{rounding.method}': only the block reconstruction "
            "(method='adaround') uses it", force=True)
        rounding_record.setdefault('ignored', []).append(setting)
    seconds = OrderedDict()
    state = state or SearchStateFile(None, {})
    t = time.perf_counter()
    with quantization_disabled(_chain_module(objective)):
        fp32_loss = objective.loss()
    log(f'FP32 calibration loss {fp32_loss:.5f}', force=True)
    # A stage cut short by a stop request is not saved, and nothing after
    # it either (the search's points are relative to the init's clips): a
    # resumed run redoes it.
    saving = True
    init_record = state.get('init')
    if init_record is None:
        init_record = _initialize(objective, init, auto_sign, reduce_hist,
                                  log, broadcast)
        saving = not stop_requested()
        if saving:
            state.update(init=init_record)
    else:
        restore_clips_and_grids(objective.quantizers, init_record['clips'])
        log('resume: the init clips of the saved state', force=True)
    p_star, sweep_record, clip_maxima = (
        init_record[k] for k in ('p_star', 'p_sweep', 'clip_maxima'))
    init_loss = objective.loss()
    init_clips = objective.clips()
    seconds['init'] = time.perf_counter() - t
    log(f'init {init.method} ({init.mode}): calibration loss {init_loss:.5f}',
        force=True)

    holdout_objective = None if holdout is None else CalibrationObjective(
        objective.steps, holdout, cache_bytes=0,
        reduce_fn=objective.reduce_fn)
    guard = dict(holdout=holdout_objective, z=search.guard_z)
    if learned and rounding.order == 'before_search':
        saved = state.get('rounding')
        if saved is None:
            saved = dict(record=_round(objective, rounding, reduce_sum, log,
                                       seconds, broadcast, guard),
                         codes=weight_codes(objective),
                         clips=objective.clips())  # learned steps moved them
            saving = saving and not stop_requested()
            if saving:
                state.update(rounding=saved)
        else:
            set_weight_codes(objective, saved['codes'])
            objective.set_clips(saved.get('clips', {}))
            log('resume: the rounding codes and clips of the saved state',
                force=True)
        rounding_record.update(saved['record'])
    t = time.perf_counter()
    variables = search.variables
    if variables == 'auto':
        variables = 'activations' if learned and \
            rounding.order == 'before_search' else 'all'
    result = joint_search(
        objective, search, log, holdout_objective, variables,
        replay=state.get('evaluations') or (),
        on_progress=lambda e: state.update(evaluations=e) if saving else None)
    _agree_on_clips(objective, broadcast)
    seconds['search'] = time.perf_counter() - t
    final_loss, loss_before_bc = result.best_loss, None
    if learned and rounding.order in ('after_search', 'between_searches'):
        rounding_record.update(_round(objective, rounding, reduce_sum, log,
                                      seconds, broadcast, guard))
        final_loss = objective.loss()
    if learned and rounding.order == 'between_searches':
        t = time.perf_counter()
        second = joint_search(objective, search, log, holdout_objective,
                              'activations')
        _agree_on_clips(objective, broadcast)
        seconds['second_search'] = time.perf_counter() - t
        rounding_record['second_search'] = dict(
            calib_loss=second.best_loss, func_evals=second.func_evals,
            guard=second.guard)
        final_loss = second.best_loss
    if bias_correction == 'empirical':
        t = time.perf_counter()
        loss_before_bc = final_loss
        empirical_bias_correction(
            _chain_module(objective),
            lambda: objective.run_from(0, objective.calib.inputs),
            reduce_sum)
        final_loss = objective.loss()
        seconds['bias_correction'] = time.perf_counter() - t
        log(f'empirical bias correction: loss {loss_before_bc:.5f} -> '
            f'{final_loss:.5f}', force=True)
    return LapqResult(init.method, init.mode, p_star, init_loss, final_loss,
                      result, init_clips, objective.clips(),
                      sweep_record, bias_correction, loss_before_bc,
                      dict(seconds), clip_maxima, fp32_loss, rounding_record,
                      resumed=state.resumed)


def _initialize(objective: CalibrationObjective, init: InitSettings,
                auto_sign: bool, reduce_hist, log, broadcast) -> dict:
    """The layer-wise init (with the p sweep when p is not given); the
    record of it, with the clips and grids it set."""
    initializer = ClipInitializer(objective, init, auto_sign=auto_sign,
                                  reduce_hist=reduce_hist)
    sweep, p_star = None, init.p
    if init.method == 'lp' and init.p is None:
        sweep = sweep_p(initializer, objective.loss, init.p_grid, log)
        p_star = sweep.fit.p_star
        log(f'p* = {p_star:.3f} {sweep.fit.fallback}'.rstrip(), force=True)
    else:
        initializer(init.p)
        if init.method != 'lp':
            p_star = None
    _agree_on_clips(objective, broadcast)
    return dict(clips=clips_and_grids(objective.quantizers), p_star=p_star,
                p_sweep=sweep.to_dict() if sweep else None,
                clip_maxima=initializer.clip_maxima())


def _round(objective: CalibrationObjective, rounding: RoundingSettings,
           reduce_sum, log, seconds: dict, broadcast=None,
           guard: Optional[dict] = None) -> dict:
    """GPTQ or block reconstruction on every layer at the current clips;
    the record of it. With held-out images (``guard['holdout']``) the
    held-out guard judges the rounding: when the learned codes raise the
    held-out loss by more than ``guard['z']`` standard errors of the paired
    per-image difference, the layers go back to the codes they had. The
    burden of proof is the other way round from the search's (whose moves
    must lower the held-out loss beyond the noise): a rounding method
    minimises each layer's or block's output error, which does not fit the
    calibration images the way free clips can, and requiring a significant
    gain threw away GPTQ's 0.7 points on ResNet-18 W4A4.

    Learned activation steps (``adaround.learn_act_steps``) are judged
    first, by the same rule, against the learned codes at the clips they
    started from; the rounding is then judged with the steps kept, and
    undoing it restores the clips too."""
    t = time.perf_counter()
    before = objective.loss()
    previous = weight_codes(objective)
    previous_clips = objective.clips()
    holdout = (guard or {}).get('holdout')
    holdout_before = holdout.image_losses() if holdout is not None else None
    name = {'gptq': 'GPTQ', 'adaround': 'AdaRound'}[rounding.method]
    record = dict(order=rounding.order, **rounding.method_settings())
    if rounding.method == 'gptq':
        apply_gptq(objective, rounding.gptq_settings, reduce_sum, log,
                   broadcast)
    else:
        if rounding.adaround_settings.drop_prob > 0:
            name = 'QDrop'
        record['reconstruction'] = reconstruct(
            objective, rounding.adaround_settings, log, broadcast)
        if rounding.adaround_settings.learn_act_steps and \
                holdout is not None:
            record['act_steps_guard'] = _judge_act_steps(
                objective, holdout, previous_clips, guard['z'], log)
    after = objective.loss()
    if holdout_before is not None:
        record['guard'] = _judge(
            holdout.image_losses(), holdout_before, guard['z'],
            objective.reduce_fn, f'the {name} rounding',
            'the codes before it', name, log)
        if record['guard']['kept'] == 'before':
            set_weight_codes(objective, previous)
            objective.set_clips(previous_clips)
            after = objective.loss()
    seconds['rounding'] = time.perf_counter() - t
    log(f'{name} rounding ({rounding.order.replace("_", " ")}): calibration '
        f'loss {before:.5f} -> {after:.5f}, {seconds["rounding"]:.1f} s',
        force=True)
    record.update(loss_before=before, loss_after=after)
    return record


def _judge_act_steps(objective: CalibrationObjective,
                     holdout: CalibrationObjective, start_clips: dict,
                     z: float, log) -> dict:
    """Keep the learned activation clips unless they raise the held-out
    loss, against the same codes at the clips they started from, by more
    than ``z`` standard errors of the paired per-image difference."""
    learned_clips = objective.clips()
    learned_losses = holdout.image_losses()
    objective.set_clips(start_clips)
    record = _judge(learned_losses, holdout.image_losses(), z,
                    objective.reduce_fn, 'the learned activation steps',
                    'the steps they started from', 'learned', log)
    if record['kept'] == 'learned':
        objective.set_clips(learned_clips)
    return record


def _judge(new: torch.Tensor, old: torch.Tensor, z: float, reduce_fn,
           what: str, against: str, label: str, log) -> dict:
    """The guard's record for a change whose per-image held-out losses
    are ``new`` (``old`` before it): kept (``label``) unless it raises the
    mean by more than ``z`` standard errors of the paired difference, then
    'before'."""
    delta, se = paired_difference(new, old, reduce_fn)
    worse = delta > z * se
    why = (f"{'undid' if worse else 'kept'} {what}: held-out loss "
           f'{delta:+.5f} +- {se:.5f} against {against} '
           f"({'more' if worse else 'not more'} than {z:g} standard errors "
           'higher)')
    log(f'guard: {why}', force=True)
    return dict(kept='before' if worse else label, why=why, delta=delta,
                se=se)


def _agree_on_clips(objective: CalibrationObjective, broadcast) -> None:
    """Every process takes rank 0's clips (distributed runs only)."""
    if broadcast is not None:
        objective.set_clips({name: broadcast(alpha) for name, alpha
                             in objective.clips().items()})


def _chain_module(objective: CalibrationObjective) -> torch.nn.Module:
    return torch.nn.ModuleList(objective.steps)
