"""The stages of a LAPQ run as plain functions of the runner; the hooks in
hooks.py are thin callers, in the order the config lists them.

Each stage reads and fills the run's :class:`RunState`
(``quantizer_of(runner).state``). In reload mode (``--eval-quantized``)
the model is rebuilt from the quantized checkpoint instead of quantized.
"""
import os
import os.path as osp
from typing import Optional

from mmengine import dist

from ..lapq.resume import ResumeMismatch, SearchStateFile

from ..quant import clips_applied
from .calibration import build_calibration_set
from .dist import broadcast_from_rank0, ranks_agree, reduce_histogram, \
    reduce_loss_sum, reduce_tensor_sum
from .errors import LAPQError
from .evaluation import evaluate, metrics_top
from .quantized_checkpoint import load_quantized_checkpoint
from .run_state import quantizer_of, unwrap

# The state of the search, for --resume (kept while a run is unfinished).
SEARCH_STATE = 'lapq_search_state.pth'


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
    with ranks_agree():
        search_state = open_search_state(runner)
    state.plans, state.result = quantizer.quantize(
        model, calib, runner.logger, reduce_fn=reduce_loss_sum,
        reduce_hist=reduce_histogram, reduce_sum=reduce_tensor_sum,
        broadcast=broadcast_from_rank0, search_state=search_state)
    state.calib = None  # free the tensors
    if evaluate_init:
        with clips_applied(model, state.result.init_clips):
            state.init_metrics = evaluate(runner, 'layer-wise init')


def search_state_path(runner) -> str:
    return osp.join(runner.work_dir, SEARCH_STATE)


def open_search_state(runner) -> SearchStateFile:
    """The run's search state file (rank 0 writes it); with ``--resume``
    the saved state, which must be of this run's settings, calibration
    images and checkpoint."""
    quantizer = quantizer_of(runner)
    state = quantizer.state
    settings = quantizer.settings()
    for key in ('max_evals', 'log_interval'):  # they do not move the path
        settings['search'].pop(key, None)
    fingerprint = dict(settings=settings, calibration=state.calib_record,
                       checkpoint=state.checkpoint,
                       world_size=dist.get_world_size())
    try:
        return SearchStateFile(search_state_path(runner), fingerprint,
                               write=dist.is_main_process(),
                               resume=state.resume)
    except ResumeMismatch as exc:
        raise LAPQError(str(exc)) from None


def finish(runner, metrics: Optional[dict], save_checkpoint: bool = True,
           plots: bool = True) -> None:
    """Record the quantized model's metrics; write the report, quantized
    checkpoint and plots into the work dir (rank 0) and log the summary.
    A finished run removes its search state file; an interrupted one keeps
    it for --resume."""
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
        if state.report['interrupted']:
            runner.logger.warning(
                f"interrupted ({state.report['interrupted']}): the report "
                'and checkpoint hold the best point so far; continue with '
                f'--resume (state in {search_state_path(runner)})')
        elif osp.exists(search_state_path(runner)):
            os.remove(search_state_path(runner))
    dist.barrier()
