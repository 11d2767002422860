"""The OpenMMLab face of mmlapq: the registered quantizer and hooks, and the
only place that knows mmengine and mmcls."""
from . import compat  # noqa: F401 - registers mmlapq.PackInputs
from .errors import LAPQError
from .hooks import (CalibrationHook, FP32EvalHook, LAPQHook, LAPQReportHook)
from .quantizer import LAPQQuantizer

__all__ = ['LAPQError', 'LAPQQuantizer', 'FP32EvalHook', 'CalibrationHook',
           'LAPQHook', 'LAPQReportHook']
