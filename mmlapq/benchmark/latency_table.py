"""The per-layer latency table of a mixed-precision latency budget
(``quantizer.mixed.budget=dict(latency=MS, table=PATH)``), as
HAWQ-V3 measures it: the config's model exported at each uniform candidate
width (first/last layers and overrides as configured), each export run in
onnxruntime with its profiler, each conv / matrix kernel's median time
(with the requantizations just before it) given to its layer, under the
widths the layer ran at (``wfpafp`` for a float layer). Written once
by ``tools/latency_table.py``, read back by ``lapq.mixed``.

On CPUs onnxruntime has 8-bit kernels only: 2/3/4-bit layers run at 8-bit
speed (a Clip on their codes, a requantization where widths change), so
this table, not BOPs, is what a CPU deployment's budget reads.
"""
import copy
import datetime
import os.path as osp
import tempfile
from typing import Sequence

import torch

from ..engine.errors import LAPQError
from ..engine.export import build_model, preprocessed_test_set
from ..export import export_qdq
from ..export.onnxruntime import kernel_times_by_layer
from ..lapq import CalibrationSet
from ..lapq.mixed import layer_costs, option_label
from ..quant.running import running_widths
from ..quant.wrap import merge_overrides
from ..registry import MODELS as LAPQ_MODELS


def latency_table(cfg, checkpoint: str, w_candidates: Sequence[int],
                  a_candidates: Sequence[int], batch_size: int = 1,
                  runs: int = 20, threads: int = 1,
                  free_first_last: bool = False,
                  logger=None) -> dict:
    """``{layers: {name: {'w4a4': ms, ...}}, ...}`` for the config's
    model."""
    import onnxruntime
    float_model = build_model(cfg, checkpoint)
    x, labels = preprocessed_test_set(cfg, float_model, 32,
                                      batch_size=32)[0]
    quant_cfg = {k: v for k, v in dict(cfg.quantizer).items()
                 if k != 'mixed'}
    settings = LAPQ_MODELS.build(quant_cfg).quant
    costs = layer_costs(float_model, torch.from_numpy(x[:1]), settings,
                        free_first_last)
    table = {c.name: {} for c in costs}
    calib = CalibrationSet.from_tensors(torch.from_numpy(x),
                                        torch.from_numpy(labels), 16)
    sample = x[:batch_size] if batch_size <= len(x) else x.repeat(
        -(-batch_size // len(x)), 0)[:batch_size]
    for w in w_candidates:
        for a in a_candidates:
            options = {c.name: c.uniform_option((w, a)) for c in costs}
            overrides = {c.name: dict(zip(('w_bits', 'a_bits'),
                                          options[c.name]))
                         for c in costs if c.free_w or c.free_a}
            model = copy.deepcopy(float_model)
            quantizer = LAPQ_MODELS.build(dict(
                quant_cfg, overrides=merge_overrides(settings.overrides,
                                               overrides),
                init=dict(method='max', mode='independent'),
                search=dict(method='none'), rounding=dict(method='nearest'),
                equalize=False, calib=dict(holdout_images=0,
                                           num_images=len(x),
                                           batch_size=16)))
            quantizer.quantize(model, calib)
            model = model.to(memory_format=torch.contiguous_format).eval()
            with tempfile.TemporaryDirectory() as tmp:
                path = osp.join(tmp, 'model.onnx')
                export_qdq(model, torch.from_numpy(sample), path)
                times = kernel_times_by_layer(path, sample, runs, threads)
            missing = [c.name for c in costs if c.name not in times]
            if missing:
                raise LAPQError(f'the profile of the W{w}A{a} export has no '
                                f'kernel for layer {missing[0]}')
            runs_at = running_widths(model)  # keyed by what ran
            for c in costs:
                table[c.name].setdefault(option_label(runs_at[c.name]),
                                         []).append(times[c.name])
            if logger:
                logger.info(f'W{w}A{a}: {sum(times[c.name] for c in costs):.3f}'
                            ' ms in the layers')
    return dict(
        layers={name: {k: sorted(v)[len(v) // 2] for k, v in row.items()}
                for name, row in table.items()},
        runtime=f'onnxruntime {onnxruntime.__version__}',
        batch_size=batch_size, threads=threads, runs=runs,
        config=cfg.filename, checkpoint=checkpoint,
        date=datetime.datetime.now().isoformat(timespec='seconds'))
