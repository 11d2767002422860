"""Test-set evaluation with the Runner's own test dataloader and evaluator
(mmcls's metrics), for the float model, the layer-wise init, the benchmark's
methods; any number of processes. And the Runner the benchmark evaluates
with."""
import copy
import logging
import time
from typing import Dict, Optional

import torch
import torch.nn as nn

from .checkpoint import load_float_checkpoint
from .compat import init_scope
from .data_checks import reading_data
from .dist import ranks_agree
from .run_state import unwrap


def build_eval_runner(cfg, work_dir: str, checkpoint: Optional[str],
                      test_images: Optional[int] = None):
    """An mmengine Runner of ``cfg`` for evaluating models: its float model
    loaded strictly from ``checkpoint``, its test dataloader (the first
    ``test_images`` images) and evaluator; the LAPQ hooks left out."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.work_dir, cfg.load_from, cfg.custom_hooks = work_dir, None, []
    init_scope(cfg)
    if test_images is not None:
        cfg.test_dataloader.dataset.indices = int(test_images)
    runner = Runner.from_cfg(cfg)
    if checkpoint:
        load_float_checkpoint(unwrap(runner.model), checkpoint)
    unwrap(runner.model).eval()
    return runner


def get_logger(name: str) -> logging.Logger:
    """mmengine's logger ``name`` at INFO (what a Runner logs with)."""
    from mmengine.logging import MMLogger
    return MMLogger.get_instance(name, log_level='INFO')


def evaluate(runner, what: str, model: Optional[nn.Module] = None
             ) -> Dict[str, float]:
    """Metrics of ``model`` (default: the runner's) on the test dataloader,
    logged with ``what``."""
    loop = runner.test_loop
    model = runner.model if model is None else model
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


def metrics_top(metrics: Optional[dict]) -> Dict[str, Optional[float]]:
    """top-1 / top-5 (percent) of mmcls's Accuracy metrics, None if absent."""
    metrics = metrics or {}
    return {'top1': metrics.get('accuracy/top1'),
            'top5': metrics.get('accuracy/top5')}
