"""Test-set evaluation with the Runner's own test dataloader and evaluator
(mmcls's metrics), for the float model, the layer-wise init, the benchmark's
methods; any number of processes."""
import time
from typing import Dict, Optional

import torch
import torch.nn as nn

from .data_checks import reading_data
from .dist import ranks_agree


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
