"""The stages of a LAPQ run as plain functions of the runner; the hooks in
hooks.py are thin callers, in the order the config lists them.

Each stage reads and fills the run's :class:`RunState`
(``quantizer_of(runner).state``). In reload mode (``--eval-quantized``)
the model is rebuilt from the quantized checkpoint instead of quantized.
"""
from typing import Optional

from mmengine import dist

from ..quant import clips_applied
from .calibration import build_calibration_set
from .dist import broadcast_from_rank0, ranks_agree, reduce_histogram, \
    reduce_loss_sum, reduce_tensor_sum
from .evaluation import evaluate, metrics_top
from .quantized_checkpoint import load_quantized_checkpoint
from .run_state import quantizer_of, unwrap


def evaluate_fp32(runner) -> None:
    """Test metrics of the float model, before anything is quantized."""
    state = quantizer_of(runner).state
    if not state.reloading:
        state.fp32_metrics = evaluate(runner, 'FP32')


def calibrate(runner) -> None:
    """The fixed calibration tensors (and held-out ones) of this process."""
    quantizer = quantizer_of(runner)
    state, calib_cfg = quantizer.state, quantizer.calib
    if state.reloading:
        return
    with ranks_agree():
        state.calib, state.calib_record = build_calibration_set(
            runner.cfg, unwrap(runner.model), calib_cfg['num_images'],
            calib_cfg['seed'], calib_cfg['batch_size'], runner.logger,
            rank=dist.get_rank(), world_size=dist.get_world_size(),
            holdout_images=calib_cfg['holdout_images'],
            dataset=state.calib_dataset)


def quantize(runner, evaluate_init: bool = False) -> None:
    """Quantize the runner's model in place (Lp init, p sweep, rounding,
    joint search), or rebuild it from the quantized checkpoint. With
    ``evaluate_init``, also the test metrics at the layer-wise init's clips
    (nearest rounding, no bias shift)."""
    quantizer = quantizer_of(runner)
    state, model = quantizer.state, unwrap(runner.model)
    if state.reloading:
        state.plans = load_quantized_checkpoint(model, state.reload_from)
        runner.logger.info(f'quantized model rebuilt from '
                           f'{state.reload_from}')
        return
    calib = state.require('calib', 'LAPQHook')
    state.plans, state.result = quantizer.quantize(
        model, calib, runner.logger, reduce_fn=reduce_loss_sum,
        reduce_hist=reduce_histogram, reduce_sum=reduce_tensor_sum,
        broadcast=broadcast_from_rank0)
    state.calib = None  # free the tensors
    if evaluate_init:
        with clips_applied(model, state.result.init_clips):
            state.init_metrics = evaluate(runner, 'layer-wise init')


def finish(runner, metrics: Optional[dict], save_checkpoint: bool = True,
           plots: bool = True) -> None:
    """Record the quantized model's metrics; write the report, quantized
    checkpoint and plots into the work dir (rank 0) and log the summary."""
    from .report_builder import build_report, write_run_outputs
    state = quantizer_of(runner).state
    state.quantized_metrics = metrics
    if state.reloading:
        runner.logger.info(f"quantized model top-1: "
                           f"{metrics_top(metrics)['top1']}")
        return
    state.require('result', 'LAPQReportHook')
    state.report = build_report(runner, metrics)
    if dist.is_main_process():
        files = write_run_outputs(runner, state.report, save_checkpoint,
                                  plots)
        runner.logger.info('LAPQ summary\n' + files['table'])
        runner.logger.info(f"report: {files['json']}")
    dist.barrier()
