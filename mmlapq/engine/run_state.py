"""The state of one quantization run, owned by the run's quantizer.

Each stage of a run (FP32 evaluation, calibration, quantization, report)
reads what the earlier ones left in one :class:`RunState` and adds its own
part. The hooks reach it through :func:`quantizer_of`, which builds the
config's ``quantizer`` once per runner; nothing passes between the hooks
through mmengine's message hub. A stage whose input is missing (a config
without ``CalibrationHook``, say) stops with an error naming the hook to add.
"""
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch.nn as nn
from mmengine.model import is_model_wrapper

from .errors import LAPQError

# What each field is made by, for the error when it is missing.
_MADE_BY = dict(
    calib="dict(type='mmlapq.CalibrationHook') in custom_hooks, before "
          'LAPQHook',
    result="dict(type='mmlapq.LAPQHook') in custom_hooks",
    plans="dict(type='mmlapq.LAPQHook') in custom_hooks")


@dataclass
class RunState:
    """What one run has made so far.

    Attributes:
        checkpoint: the float checkpoint the model was loaded from.
        reload_from: a quantized checkpoint to rebuild the model from
            (``--eval-quantized``) instead of quantizing.
        resume: continue from the search state file in the work dir
            (``--resume``).
        calib_dataset: the calibration dataset, once built (by the data
            checks), so it is not built again.
        channels_last: the memory format the run uses (None: not chosen
            yet); False where the model's forward cannot run channels-last.
        fp32_metrics: test metrics of the float model.
        calib: the calibration tensors (freed after the search).
        calib_record: where the calibration images came from.
        equalization: the record of cross-layer equalization (pairs,
            ReLU6 modules replaced), when the run equalized.
        layernorms: the record of the LayerNorm reparameterization, when
            the run did it.
        mixed: the record of the mixed-precision allocation (sensitivity,
            chosen widths, budget used), when the run chose widths.
        quant: the quantizer settings with the allocation's widths merged
            into the overrides (what the model is wrapped with), when the
            run chose widths.
        plans: the quantized layers.
        result: the LAPQ result (init, search, rounding, timings).
        init_metrics: test metrics at the layer-wise init's clips.
        quantized_metrics: test metrics of the quantized model.
        report: the finished report.
    """
    checkpoint: Optional[str] = None
    reload_from: Optional[str] = None
    resume: bool = False
    calib_dataset: Any = None
    channels_last: Optional[bool] = None
    fp32_metrics: Optional[Dict[str, float]] = None
    calib: Any = None
    calib_record: Optional[dict] = None
    equalization: Optional[dict] = None
    layernorms: Optional[dict] = None
    mixed: Optional[dict] = None
    quant: Any = None
    plans: Optional[List[Any]] = None
    result: Any = None
    init_metrics: Optional[Dict[str, float]] = None
    quantized_metrics: Optional[Dict[str, float]] = None
    report: Optional[dict] = None

    @property
    def reloading(self) -> bool:
        return self.reload_from is not None

    def require(self, name: str, stage: str):
        """The field ``name``, or an LAPQError saying which hook makes it."""
        value = getattr(self, name)
        if value is None:
            raise LAPQError(f'{stage} needs the {name} of an earlier stage, '
                            'which this run did not make: add '
                            f'{_MADE_BY.get(name, "its hook")} to the config')
        return value


# One quantizer per runner, without keeping finished runners alive.
_QUANTIZERS: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def quantizer_of(runner):
    """The run's LAPQQuantizer (built once from ``cfg.quantizer``); its
    ``state`` is the run's :class:`RunState`."""
    quantizer = _QUANTIZERS.get(runner)
    if quantizer is None:
        cfg = runner.cfg.get('quantizer')
        if cfg is None:
            raise LAPQError('the config has no `quantizer` key: inherit '
                            "configs/_base_/lapq_w4a4.py or add quantizer = "
                            "dict(type='mmlapq.LAPQQuantizer', ...)")
        from ..registry import MODELS
        quantizer = MODELS.build(cfg)
        _QUANTIZERS[runner] = quantizer
    return quantizer


def attach_quantizer(runner, quantizer) -> None:
    """Make ``quantizer`` (built before the runner, so that bad settings
    fail first) the one :func:`quantizer_of` returns for ``runner``."""
    _QUANTIZERS[runner] = quantizer


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if is_model_wrapper(model) else model
