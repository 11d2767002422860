"""The runtime benchmark of ``tools/benchmark_onnx.py``: latency and top-1
of exported models next to the float model and the runtimes' own int8
quantizers (onnxruntime's ``quantize_static``; NNCF for OpenVINO), every
model of a runtime timed in turns in this process (``timing``)."""
import datetime
import os
import os.path as osp
from typing import Dict, Optional

import numpy as np
import torch

from ..engine.calibration import build_calibration_set
from ..engine.env import cpu_model
from ..engine.errors import LAPQError
from ..engine.export import build_model, export_onnx, preprocessed_test_set
from ..export import onnxruntime as ort
from ..export import openvino as ov
from .timing import interleaved_latency, top1

# The model each runtime's rows are compared with ("x int8").
REFERENCE = {'onnxruntime': 'onnxruntime int8', 'openvino': 'NNCF int8'}


def runtime_benchmark(cfg, models: Dict[str, str], out_dir: str,
                      checkpoint: Optional[str] = None,
                      batch_sizes=(1, 64), threads: int = 2,
                      rounds: int = 30, calib_images: int = 512,
                      test_images: Optional[int] = None,
                      openvino: bool = True, ort_dynamic: bool = False,
                      transformer: bool = False, log=print) -> dict:
    """Latency and top-1 of the float model, the runtimes' own int8 models
    of the same FP32 ONNX (made here, from the config's first
    ``calib_images`` calibration images, seed 0), and the exported
    ``models`` {label: ONNX path}, in onnxruntime and (when installed)
    OpenVINO. ``ort_dynamic``: also onnxruntime's dynamic quantization
    (what it recommends for transformers). ``transformer``: also
    onnxruntime's static int8 with its SmoothQuant option (where the
    neural-compressor package it needs is installed), and NNCF with its
    transformer preset."""
    for label, path in models.items():
        if not osp.isfile(path):
            raise LAPQError(f'{label}: ONNX file {path} does not exist: '
                            'write it with tools/export.py')
    checkpoint = checkpoint or cfg.get('load_from')
    if not checkpoint:
        raise LAPQError('no float checkpoint: pass --checkpoint or set '
                        'load_from in the config')
    os.makedirs(out_dir, exist_ok=True)
    fp32 = osp.join(out_dir, 'fp32.onnx')
    export_onnx(cfg, checkpoint, fp32)
    model = build_model(cfg, checkpoint)
    calib, _ = build_calibration_set(cfg, model, calib_images, 0, 64)
    calib_x = torch.cat(calib.inputs).numpy()
    log(f'onnxruntime quantize_static on {len(calib_x)} calibration images')
    files = {'FP32': fp32, 'onnxruntime int8': ort.ort_quantize_static(
        fp32, osp.join(out_dir, 'ort_int8.onnx'), calib_x)}
    if transformer:
        try:
            files['onnxruntime int8 SmoothQuant'] = ort.ort_quantize_static(
                fp32, osp.join(out_dir, 'ort_int8_smoothquant.onnx'),
                calib_x, smooth_quant=True)
        except (ImportError, RuntimeError, ValueError) as exc:
            # without the neural-compressor package it needs, or on a
            # graph its SmoothQuant cannot transform, the other rows run
            log(f'onnxruntime SmoothQuant failed or is not available '
                f'({type(exc).__name__}: {exc}): no row')
    if ort_dynamic:
        log('onnxruntime quantize_dynamic')
        files['onnxruntime dynamic int8'] = ort.ort_quantize_dynamic(
            fp32, osp.join(out_dir, 'ort_dynamic_int8.onnx'))
    files.update(models)
    runners = {'onnxruntime': {k: ort.ort_runner(v, threads)
                               for k, v in files.items()}}
    if openvino and ov.openvino_available():
        ov_files = {'FP32': fp32}
        try:
            ov_files['NNCF int8'] = ov.nncf_quantize(
                fp32, osp.join(out_dir, 'nncf_int8.xml'), calib_x)
            if transformer:
                ov_files['NNCF int8 transformer'] = ov.nncf_quantize(
                    fp32, osp.join(out_dir, 'nncf_int8_transformer.xml'),
                    calib_x, transformer=True)
        except ImportError:
            log('NNCF is not installed: no NNCF int8 row')
        ov_files.update(models)
        runners['openvino'] = {k: ov.openvino_runner(v, threads)
                               for k, v in ov_files.items()}
    test = preprocessed_test_set(cfg, model, test_images)
    # The timed batches: the first test images (concatenated once).
    timing_images = np.ascontiguousarray(np.concatenate(
        [x for x, _ in test])[:max(batch_sizes)])
    rows = []
    for runtime, group in runners.items():
        log(f'{runtime}: top-1 on {sum(len(y) for _, y in test)} images')
        accuracy = {k: top1(run, test)['top1'] for k, run in group.items()}
        latency = {}
        for batch_size in batch_sizes:
            log(f'{runtime}: batch {batch_size}, {rounds} rounds in turns')
            latency[batch_size] = interleaved_latency(
                group, timing_images[:batch_size], rounds)
        rows += [_row(runtime, label, accuracy[label], latency)
                 for label in group]
    if 'openvino' in runners:
        for row in rows:
            if row['runtime'] == 'openvino':
                row['kernels'] = ov.openvino_int8_layers(
                    ov_files[row['model']], threads)
    return dict(rows=rows, threads=threads, rounds=rounds,
                batch_sizes=list(batch_sizes), calib_images=len(calib_x),
                test_images=sum(len(y) for _, y in test),
                env=_runtime_env(),
                files=files)  # onnxruntime's: {label: ONNX path}


def _runtime_env() -> dict:
    """The machine, the date and the runtimes' versions of a run."""
    from importlib.metadata import PackageNotFoundError, version
    env = dict(cpu=cpu_model(),
               date=datetime.datetime.now().isoformat(timespec='seconds'))
    for package in ('onnxruntime', 'openvino', 'nncf'):
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            pass
    return env


def _row(runtime: str, label: str, top1_: float, latency: dict) -> dict:
    """One model's row: top-1, and per batch size its milliseconds, its
    ratio to FP32 and to the runtime's own int8 model."""
    row = dict(runtime=runtime, model=label, top1=top1_)
    for batch_size, times in latency.items():
        ref = times.get(REFERENCE[runtime])
        row[f'b{batch_size}_ms'] = 1000 * times[label]['median_s']
        row[f'b{batch_size}_vs_fp32'] = times[label]['ratio_to_first']
        row[f'b{batch_size}_vs_int8'] = None if ref is None else \
            times[label]['median_s'] / ref['median_s']
    return row
