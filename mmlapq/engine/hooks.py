"""The stages of a LAPQ run as mmengine hooks, run by ``Runner.test()``:

    FP32EvalHook      before_test       evaluate the loaded float model
    CalibrationHook   before_test       build the calibration tensors
    LAPQHook          before_test       wrap the model, initialise, search
    (test loop)                         mmcls's evaluator on the quantized model
    LAPQReportHook    after_test_epoch  report, checkpoint, plots

Each hook calls one function of engine/stages.py; the run's state lives in
the run's quantizer (engine/run_state.py).
"""
from mmengine.hooks import Hook

from ..registry import HOOKS
from . import stages


@HOOKS.register_module()
class FP32EvalHook(Hook):
    """Evaluate the loaded float model before anything is quantized."""

    priority = 'VERY_HIGH'

    def __init__(self, enable: bool = True):
        self.enable = enable

    def before_test(self, runner) -> None:
        if self.enable:
            stages.evaluate_fp32(runner)


@HOOKS.register_module()
class CalibrationHook(Hook):
    """Build the fixed calibration tensors (see engine/calibration.py)."""

    priority = 'HIGH'

    def before_test(self, runner) -> None:
        stages.calibrate(runner)


@HOOKS.register_module()
class LAPQHook(Hook):
    """Quantize the model in place: Lp init with the p sweep, rounding, then
    the joint search; or rebuild it from a saved quantized checkpoint.

    Args:
        evaluate_init (bool): also evaluate the layer-wise init on the test
            set (one more test pass), for the report's comparison table.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, evaluate_init: bool = False):
        self.evaluate_init = evaluate_init

    def before_test(self, runner) -> None:
        stages.quantize(runner, self.evaluate_init)


@HOOKS.register_module()
class LAPQReportHook(Hook):
    """Write lapq_report.json/.md, the quantized checkpoint and the plots
    into the work dir (rank 0 only), and log the summary table."""

    priority = 'LOW'

    def __init__(self, save_checkpoint: bool = True, plots: bool = True):
        self.save_checkpoint = save_checkpoint
        self.plots = plots

    def after_test_epoch(self, runner, metrics=None) -> None:
        stages.finish(runner, metrics, self.save_checkpoint, self.plots)


__all__ = ['FP32EvalHook', 'CalibrationHook', 'LAPQHook', 'LAPQReportHook']
