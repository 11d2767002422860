"""The stages of a LAPQ run as mmengine hooks, run by ``Runner.test()``:

    FP32EvalHook      before_test   evaluate the loaded float model
    CalibrationHook   before_test   build the calibration tensors
    LAPQHook          before_test   wrap the model, initialise, search
    (test loop)                     mmcls's evaluator on the quantized model
    LAPQReportHook    after_test_epoch  report, checkpoint, plots

They share their results through the runner's message hub (``lapq/...``).
"""
import os.path as osp
import time
from typing import Optional

import torch
from mmengine import dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..quant import clips_applied
from ..registry import HOOKS, MODELS
from .calibration import build_calibration_set
from .checkpoint import QUANTIZED_CHECKPOINT, atomic_save
from .data_checks import reading_data
from .dist import (ranks_agree, reduce_histogram, reduce_loss_sum,
                   reduce_tensor_sum)
from .quantizer import apply_quantized_state, quantized_state

INFO = 'lapq/'


def unwrap(model):
    return model.module if is_model_wrapper(model) else model


def get_quantizer(runner):
    """The run's LAPQQuantizer, built once from ``cfg.quantizer``."""
    hub = runner.message_hub
    quantizer = hub.get_info(INFO + 'quantizer')
    if quantizer is None:
        cfg = runner.cfg.get('quantizer')
        if cfg is None:
            from .errors import LAPQError
            raise LAPQError('the config has no `quantizer` key: inherit '
                            "configs/_base_/lapq_w4a4.py or add quantizer = "
                            "dict(type='mmlapq.LAPQQuantizer', ...)")
        quantizer = MODELS.build(cfg)
        hub.update_info(INFO + 'quantizer', quantizer)
    return quantizer


def evaluate(runner, what: str) -> dict:
    """Run the test dataloader through the test evaluator (any rank count)."""
    loop = runner.test_loop
    model = runner.model
    model.eval()
    n = len(loop.dataloader)
    t0 = time.perf_counter()
    # A rank that cannot read an image stops every rank before the
    # evaluator gathers the results.
    with torch.no_grad(), ranks_agree(), reading_data():
        for i, batch in enumerate(loop.dataloader):
            outputs = model.test_step(batch)
            loop.evaluator.process(data_samples=outputs, data_batch=batch)
            if (i + 1) % 50 == 0:
                runner.logger.info(f'{what} evaluation: {i + 1}/{n} batches')
    metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
    runner.logger.info(f'{what} evaluation ({time.perf_counter() - t0:.1f} '
                       f's): {metrics}')
    return metrics


def metrics_top(metrics: Optional[dict]) -> dict:
    metrics = metrics or {}
    return {'top1': metrics.get('accuracy/top1'),
            'top5': metrics.get('accuracy/top5')}


@HOOKS.register_module()
class FP32EvalHook(Hook):
    """Evaluate the loaded float model before anything is quantized."""

    priority = 'VERY_HIGH'

    def __init__(self, enable: bool = True):
        self.enable = enable

    def before_test(self, runner) -> None:
        if not self.enable or runner.cfg.get('lapq_quantized_checkpoint'):
            return
        # The memory format of the whole run, so the float evaluation runs
        # as fast as the quantized one.
        model = unwrap(runner.model)
        first = next(iter(runner.test_loop.dataloader))
        get_quantizer(runner).prepare(
            model, model.data_preprocessor(first, False)['inputs'])
        runner.message_hub.update_info(INFO + 'fp32',
                                       evaluate(runner, 'FP32'))


@HOOKS.register_module()
class CalibrationHook(Hook):
    """Build the fixed calibration tensors (see engine/calibration.py)."""

    priority = 'HIGH'

    def before_test(self, runner) -> None:
        if runner.cfg.get('lapq_quantized_checkpoint'):
            return
        calib_cfg = get_quantizer(runner).calib
        with ranks_agree():
            calib, record = build_calibration_set(
                runner.cfg, unwrap(runner.model), calib_cfg['num_images'],
                calib_cfg['seed'], calib_cfg['batch_size'], runner.logger,
                rank=dist.get_rank(), world_size=dist.get_world_size(),
                holdout_images=calib_cfg['holdout_images'])
        runner.message_hub.update_info(INFO + 'calib', calib)
        runner.message_hub.update_info(INFO + 'calib_record', record)


@HOOKS.register_module()
class LAPQHook(Hook):
    """Quantize the model in place: Lp init with the p sweep, then the joint
    search; or rebuild it from a saved quantized checkpoint.

    Args:
        evaluate_init (bool): also evaluate the layer-wise init on the test
            set (one more test pass), for the report's comparison table.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, evaluate_init: bool = False):
        self.evaluate_init = evaluate_init

    def before_test(self, runner) -> None:
        hub = runner.message_hub
        model = unwrap(runner.model)
        saved = runner.cfg.get('lapq_quantized_checkpoint')
        if saved:
            from mmengine.runner.checkpoint import _load_checkpoint
            ckpt = _load_checkpoint(saved, map_location='cpu')
            plans = apply_quantized_state(model, ckpt['state_dict'],
                                          ckpt['meta']['lapq'])
            if ckpt['meta']['lapq']['settings'].get('channels_last'):
                model.to(memory_format=torch.channels_last)
            hub.update_info(INFO + 'plans', plans)
            runner.logger.info(f'quantized model rebuilt from {saved}')
            return
        quantizer = get_quantizer(runner)
        calib = hub.get_info(INFO + 'calib')
        plans, result = quantizer.quantize(model, calib, runner.logger,
                                           reduce_fn=reduce_loss_sum,
                                           reduce_hist=reduce_histogram,
                                           reduce_sum=reduce_tensor_sum)
        hub.update_info(INFO + 'plans', plans)
        hub.update_info(INFO + 'result', result)
        hub.update_info(INFO + 'calib', None)  # free the tensors
        if self.evaluate_init:
            hub.update_info(INFO + 'init_metrics',
                            self._evaluate_at(runner, model, result.init_clips))

    @staticmethod
    def _evaluate_at(runner, model, clips) -> dict:
        """Test metrics at ``clips`` with nearest rounding and no bias
        shift (the layer-wise init); the model is back to final after."""
        with clips_applied(model, clips):
            return evaluate(runner, 'layer-wise init')


@HOOKS.register_module()
class LAPQReportHook(Hook):
    """Write lapq_report.json/.md, the quantized checkpoint and the plots
    into the work dir (rank 0 only), and log the summary table."""

    priority = 'LOW'

    def __init__(self, save_checkpoint: bool = True, plots: bool = True):
        self.save_checkpoint = save_checkpoint
        self.plots = plots

    def after_test_epoch(self, runner, metrics=None) -> None:
        from .report_builder import build_report, write_run_outputs
        hub = runner.message_hub
        if runner.cfg.get('lapq_quantized_checkpoint'):
            runner.logger.info(f'quantized model top-1: '
                               f"{metrics_top(metrics)['top1']}")
            hub.update_info(INFO + 'quantized', metrics)
            return
        report = build_report(runner, metrics)
        hub.update_info(INFO + 'report', report)
        if dist.is_main_process():
            files = write_run_outputs(runner, report, self.save_checkpoint,
                                      self.plots)
            runner.logger.info('LAPQ summary\n' + files['table'])
            runner.logger.info(f"report: {files['json']}")
        dist.barrier()


def checkpoint_payload(runner) -> dict:
    model = unwrap(runner.model)
    quantizer = get_quantizer(runner)
    plans = runner.message_hub.get_info(INFO + 'plans')
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return dict(state_dict=state,
                meta=dict(lapq=quantized_state(model, quantizer, plans),
                          config=osp.abspath(runner.cfg.filename or '')
                          if runner.cfg.filename else None))


def save_quantized_checkpoint(runner, path: str) -> str:
    atomic_save(checkpoint_payload(runner), path)
    return path


__all__ = ['FP32EvalHook', 'CalibrationHook', 'LAPQHook', 'LAPQReportHook',
           'QUANTIZED_CHECKPOINT', 'save_quantized_checkpoint']
