"""Timing and scoring of runners (functions from a batch of preprocessed
images to class scores: an onnxruntime session, an OpenVINO model), pure
numpy: latency measured in turns, and top-1 with the predictions."""
import time
from typing import Callable, Dict, Iterable, List

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


def interleaved_latency(runners: Dict[str, Runner], batch: np.ndarray,
                        rounds: int = 20, warmup: int = 3
                        ) -> Dict[str, Dict[str, float]]:
    """Seconds per batch of each runner, measured in turns (A, B, C, A, B,
    C, ...) so that a change of machine load touches all alike: median,
    min and max over ``rounds``, and the median of each round's ratio to
    the first runner."""
    for _ in range(warmup):
        for run in runners.values():
            run(batch)
    times: Dict[str, List[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - t0)
    first = next(iter(runners))
    out = {}
    for name, values in times.items():
        ratios = sorted(v / f for v, f in zip(values, times[first]))
        ordered = sorted(values)
        out[name] = dict(median_s=ordered[len(ordered) // 2],
                         min_s=ordered[0], max_s=ordered[-1],
                         ratio_to_first=ratios[len(ratios) // 2])
    return out


def top1(run: Runner, batches: Iterable, batch_size: int = 500
         ) -> Dict[str, float]:
    """Top-1 (%) of a runner over (images, labels) numpy batches, with the
    predictions (argmax of the scores) for agreement checks."""
    predictions, labels = [], []
    for x, y in batches:
        for i in range(0, len(x), batch_size):
            predictions.append(run(x[i:i + batch_size]).argmax(1))
        labels.append(y)
    predictions = np.concatenate(predictions)
    labels = np.concatenate(labels)
    return dict(top1=100.0 * float((predictions == labels).mean()),
                predictions=predictions)
