"""The registered quantizer: every setting a config may give, in one place.

    quantizer = dict(
        type='mmlapq.LAPQQuantizer',
        w_bits=4, a_bits=4,                      # see docs/config.md
        init=dict(method='lp', mode='sequential', p=None, p_grid=[...]),
        search=dict(method='powell', maxiter=2, max_evals=None),
        calib=dict(num_images=512, seed=0, batch_size=64))
"""
import logging
from dataclasses import asdict, replace
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..lapq import (CalibrationObjective, CalibrationSet, InitSettings,
                    LapqResult, RoundingSettings, SearchSettings, run_lapq)
from ..quant.grids import check_type
from ..quant import QuantSettings, quantize_model, quantizers
from ..quant.wrap import merge_overrides
from ..registry import MODELS
from ..quant.bn_fold import fold_batch_norms
from ..quant.equalize import equalize
from ..quant.attention import float_attention, quantizable_attentions
from ..quant.layernorm import reparameterize_layernorms
from ..lapq.chain import build_chain, classifier_logits
from ..lapq.mixed import (MixedSettings, check_running, choose_widths,
                          cost_model)
from .errors import LAPQError
from .run_state import RunState
from ..quant.precision import tf32_mode

# holdout_images: drawn (seed + 1) from the same source, never calibrated
# on; the search's guard against fitting the calibration images. 0: off.
# 512, not 128: with 128 the held-out loss is too noisy to tell a better
# point (Fashion-MNIST W4A4 93.07 -> 93.21, W4A8 93.31 -> 93.35; README).
CALIB_DEFAULTS = dict(num_images=512, seed=0, batch_size=64,
                      holdout_images=512)


def to_builtin(obj):
    """ConfigDicts and tuples to plain dicts and lists (for json and for
    torch.load(weights_only=True) of the quantized checkpoint)."""
    if isinstance(obj, dict):
        return {str(k): to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_builtin(v) for v in obj]
    return obj


@MODELS.register_module()
class LAPQQuantizer:
    """Quantizes an mmcls classifier in place with LAPQ.

    Args: the fields of :class:`mmlapq.quant.QuantSettings` (bits, grids,
    layer selection, first/last policy, overrides, BN folding, bias
    correction, preset), and
        init (dict): :class:`mmlapq.lapq.InitSettings` fields.
        search (dict): :class:`mmlapq.lapq.SearchSettings` fields.
        rounding (dict): :class:`mmlapq.lapq.RoundingSettings` fields:
            method 'nearest' | 'gptq' | 'adaround', order,
            gptq=dict(damp, block_size, act_order), adaround=dict(iters,
            batch_size, lr, drop_prob, ...).
        calib (dict): num_images, seed, batch_size of the calibration set.
        mixed (dict): per-layer widths under a budget, chosen by the
            calibration loss (:class:`mmlapq.lapq.mixed.MixedSettings`:
            budget=dict(bops_of='w4a4') | dict(bops=...) |
            dict(weight_bytes=...) | dict(weight_bits_avg=...) |
            dict(latency=MS, table=PATH); w_candidates, a_candidates).
        cache_bytes (int): memory for the objective's cached activations.
        allow_tf32 (bool): allow TF32 on GPUs in every stage: FP32
            evaluation, search and final test (noisier loss; off by
            default).
        channels_last (bool): run convolutions in channels-last memory
            format (same results up to float rounding; on these CPUs a VGG
            forward is 1.85x faster, and GPUs' tensor cores want it too).
    """

    def __init__(self, init: Optional[dict] = None,
                 search: Optional[dict] = None, calib: Optional[dict] = None,
                 rounding: Optional[dict] = None,
                 mixed: Optional[dict] = None,
                 cache_bytes: int = 4 << 30, allow_tf32: bool = False,
                 channels_last: bool = True, **quant):
        quant, init, search, calib, rounding = (
            to_builtin(d or {}) for d in (quant, init, search, calib,
                                          rounding))
        try:
            self.quant = QuantSettings(**quant)
            self.init = InitSettings(**init)
            self.search = SearchSettings(**search)
            self.rounding = RoundingSettings(**rounding)
            self.mixed = None if mixed is None else MixedSettings(
                **to_builtin(mixed))
            if self.rounding.learned and \
                    self.quant.bias_correction == 'mean':
                raise ValueError(f"rounding.method='{self.rounding.method}'"
                                 " chooses each weight's grid point, which "
                                 "bias_correction='mean' would move off the "
                                 "grid: use bias_correction='empirical' or "
                                 "'none'")
        except TypeError as exc:  # an unknown key
            raise LAPQError(f'quantizer settings: {exc}; see '
                            'docs/config.md') from None
        except ValueError as exc:
            raise LAPQError(f'quantizer settings: {exc}') from None
        self.calib = dict(CALIB_DEFAULTS, **calib)
        unknown = set(self.calib) - set(CALIB_DEFAULTS)
        if unknown:
            raise LAPQError(f'quantizer.calib has unknown keys {sorted(unknown)}'
                            f': use {sorted(CALIB_DEFAULTS)}')
        try:
            for key in CALIB_DEFAULTS:
                check_type(f'quantizer.calib.{key}', self.calib[key], int)
            check_type('quantizer.cache_bytes', cache_bytes, int)
            check_type('quantizer.allow_tf32', allow_tf32, bool)
            check_type('quantizer.channels_last', channels_last, bool)
        except ValueError as exc:
            raise LAPQError(str(exc)) from None
        if self.calib['batch_size'] < 1:
            raise LAPQError('quantizer.calib.batch_size must be >= 1')
        if self.calib['holdout_images'] < 0:
            raise LAPQError('quantizer.calib.holdout_images must be >= 0 '
                            '(0 turns the held-out guard off)')
        self.cache_bytes = int(cache_bytes)
        self.allow_tf32 = allow_tf32
        self.channels_last = bool(channels_last)
        self.state = RunState()  # what this run makes, stage by stage

    def prepare(self, model: nn.Module, probe: torch.Tensor) -> nn.Module:
        """Put the model in the memory format of the run (idempotent).

        Channels-last when the config asks for it and the model's forward
        can run that way (mmcls's ImageNet VGG flattens with ``view`` and
        cannot); ``state.channels_last`` records the choice."""
        if self.state.channels_last is None:
            self.state.channels_last = self.channels_last and \
                self._runs_channels_last(model, probe)
        model.to(memory_format=torch.channels_last
                 if self.state.channels_last else torch.contiguous_format)
        return model

    @staticmethod
    def _runs_channels_last(model: nn.Module, probe: torch.Tensor) -> bool:
        model.to(memory_format=torch.channels_last)
        # The probe runs in eval mode: in train mode it would move the BN
        # running statistics towards the two probe images.
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(probe[:2].contiguous(memory_format=torch.channels_last),
                      mode='tensor')
        except RuntimeError:
            return False
        finally:
            model.train(was_training)  # mmcls's VGG.train returns None
        return True

    def prepare_calibration(self, calib: CalibrationSet) -> CalibrationSet:
        """The calibration tensors in the memory format of the run."""
        if not self.state.channels_last:
            return calib
        return CalibrationSet(
            [x.contiguous(memory_format=torch.channels_last)
             if x.dim() == 4 else x for x in calib.inputs], calib.labels,
            None if calib.holdout is None
            else self.prepare_calibration(calib.holdout))

    def settings(self) -> dict:
        """All settings, JSON-ready (they go into the report)."""
        init = asdict(self.init)
        init['p_grid'] = list(init['p_grid'])
        search = asdict(self.search)
        search['log_bounds'] = list(search['log_bounds'])
        rounding = dict(method=self.rounding.method,
                        order=self.rounding.order,
                        gptq=asdict(self.rounding.gptq_settings),
                        adaround=asdict(self.rounding.adaround_settings))
        return to_builtin(dict(quant=self.wrap_settings.to_dict(), init=init,
                               search=search, rounding=rounding,
                               mixed=self.mixed and self.mixed.to_dict(),
                               calib=dict(self.calib),
                               cache_bytes=self.cache_bytes,
                               allow_tf32=self.allow_tf32,
                               channels_last=self.channels_last))

    def equalize(self, model: nn.Module, calib: CalibrationSet,
                 logger: Optional[logging.Logger] = None) -> None:
        """Cross-layer equalization of the float model (BN folded first,
        on the first calibration batch) when ``quantizer.equalize`` asks
        for it, and the LayerNorm reparameterization (on every calibration
        batch) when ``quantizer.layernorm_reparam`` does; the records go to
        ``state.equalization`` and ``state.layernorms``."""
        settings = self.quant.equalize_settings
        probe = calib.inputs[0]
        if settings is not None:
            fold_batch_norms(model)
            model.eval()
            record = equalize(model,
                              lambda: classifier_logits(model, probe),
                              settings)
            self.state.equalization = record
            if logger:
                logger.info(
                    f"equalized {len(record['pairs'])} conv pairs of "
                    f"{record['candidates']} candidates in "
                    f"{record['sweeps']} sweeps (largest last |log s| "
                    f"{record['max_log_scale']:.2g}); ReLU6 replaced by "
                    f"ReLU: {len(record['relu6_replaced'])}; biases "
                    f"absorbed: {record['biases_absorbed']}")
        settings = self.quant.layernorm_settings
        if settings is not None:
            model.eval()
            try:
                record = reparameterize_layernorms(
                    model, lambda: [classifier_logits(model, x)
                                    for x in calib.inputs], settings)
            except ValueError as exc:
                raise LAPQError(str(exc)) from None
            self.state.layernorms = record
            if logger:
                spreads = [r['spread_before'] for r in record['layernorms']]
                logger.info(
                    f"LayerNorm reparameterization (alpha {settings.alpha:g})"
                    f": {len(spreads)} LayerNorms, widest to narrowest "
                    f"channel range up to {max(spreads, default=0):.3g} "
                    'before; output changed by '
                    f"{record['max_output_change']:.2g} of its largest")

    def check_mixed(self, model: nn.Module, probe: torch.Tensor) -> None:
        """A budget that cannot be met, or a latency table of another
        model, fails before any work."""
        if self.mixed is None:
            return
        self._check_no_attention_products(model)
        try:
            cost_model(model, probe, self.quant, self.mixed)
        except ValueError as exc:
            raise LAPQError(str(exc)) from None

    def _check_no_attention_products(self, model: nn.Module) -> None:
        attentions = quantizable_attentions(model) \
            if self.quant.attention_matmuls and \
            self.quant.act_quant == 'layer_inputs' else []
        if attentions:
            raise LAPQError(
                'mixed precision allocates the widths of Conv2d and Linear '
                f'layers only; the attention products of {attentions[0]} '
                f'(and {len(attentions) - 1} more) would run outside its '
                'sensitivity and budget: set quantizer.attention_matmuls='
                'False, or quantize at uniform widths')

    def choose_widths(self, model: nn.Module, calib: CalibrationSet,
                      logger=None, reduce_fn=None, reduce_hist=None,
                      search_state=None) -> None:
        """Mixed precision: each free layer's widths from the sensitivity
        and the budget (``lapq.mixed``), as overrides of the settings (so
        the checkpoint rebuilds them); a resumed run takes the saved
        allocation. The record goes to ``state.mixed``."""
        self._check_no_attention_products(model)
        saved = search_state.get('mixed') if search_state else None
        if saved is None:
            try:
                result = choose_widths(
                    model, self.quant, self.mixed, calib, self.init,
                    self.cache_bytes, reduce_fn, reduce_hist,
                    seed=self.calib['seed'],
                    log=logger.info if logger else None)
            except ValueError as exc:
                raise LAPQError(str(exc)) from None
            saved = dict(overrides=result.overrides, record=result.record)
            if search_state is not None:
                search_state.update(mixed=saved)
        # The user's settings stay as given: a second quantize() must not
        # take this allocation for the user's overrides.
        self.state.quant = replace(self.quant, overrides=merge_overrides(
            self.quant.overrides, saved['overrides']))
        self.state.mixed = dict(saved['record'])

    @property
    def wrap_settings(self) -> QuantSettings:
        """What the model is wrapped with: the config's settings, with the
        mixed-precision allocation's widths once it is chosen."""
        return self.state.quant or self.quant

    def wrap(self, model: nn.Module, probe: Optional[torch.Tensor] = None):
        """Wrap ``model`` in place; ``probe`` (a calibration batch) finds
        the convs whose outputs a float op reads (they get output
        quantizers)."""
        try:
            return quantize_model(model, self.wrap_settings, example=probe)
        except ValueError as exc:
            raise LAPQError(str(exc)) from None

    def quantize(self, model: nn.Module, calib: CalibrationSet,
                 logger: Optional[logging.Logger] = None, reduce_fn=None,
                 reduce_hist=None, reduce_sum=None, broadcast=None,
                 search_state=None) -> Tuple[list, LapqResult]:
        """Wrap ``model`` in place and run LAPQ on ``calib``."""
        from ..lapq import NonFiniteLossError
        model.eval()
        self.prepare(model, calib.inputs[0])
        calib = self.prepare_calibration(calib)
        self.equalize(model, calib, logger)
        if self.mixed is not None:
            with tf32_mode(self.allow_tf32):
                self.choose_widths(model, calib, logger, reduce_fn,
                                   reduce_hist, search_state)
        plans = self.wrap(model, calib.inputs[0])
        if self.mixed is not None:  # the budget used, measured on the model
            try:
                self.state.mixed['used'] = check_running(
                    model, self.state.mixed, self.mixed)
            except ValueError as exc:
                raise LAPQError(str(exc)) from None
        steps = build_chain(model, calib.inputs[0], logger)
        left_float = float_attention(model)
        if logger and left_float:
            logger.info('attention products left in floating point in '
                        f"{', '.join(left_float)}: mmlapq quantizes those of "
                        "mmcls's and mmpretrain's MultiheadAttention")
        if logger:
            logger.info(f'{len(plans)} layers quantized, '
                        f'{sum(1 for _ in quantizers(model))} clips to '
                        f'search, chain of {len(steps)} steps')
        objective = CalibrationObjective(steps, calib, model=model,
                                         cache_bytes=self.cache_bytes,
                                         reduce_fn=reduce_fn)
        try:
            with tf32_mode(self.allow_tf32):
                result = run_lapq(objective, self.init, self.search,
                                  self.quant.bias_correction,
                                  auto_sign=self.quant.a_signed == 'auto',
                                  logger=logger, reduce_hist=reduce_hist,
                                  reduce_sum=reduce_sum,
                                  rounding=self.rounding,
                                  holdout=calib.holdout,
                                  broadcast=broadcast, state=search_state)
        except NonFiniteLossError as exc:
            raise LAPQError(str(exc)) from None
        return plans, result
