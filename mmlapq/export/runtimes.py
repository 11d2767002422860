"""Running exported models in onnxruntime and OpenVINO on CPU: sessions,
the runtimes' own int8 quantizers (the user's alternative to mmlapq), and
interleaved latency measurement. Needs onnxruntime; OpenVINO parts need
``openvino`` (and NNCF for its int8 quantizer), imported only when used."""
import os
import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


def ort_session(path: str, threads: Optional[int] = None,
                optimized_path: Optional[str] = None):
    """An onnxruntime CPU session of ``path`` (all graph optimizations);
    ``optimized_path``: where onnxruntime writes the graph it runs. With
    ``threads``, its worker threads sleep between runs instead of spinning:
    sessions timed in turns would otherwise take the cores from each
    other."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry('session.intra_op.allow_spinning',
                                         '0')
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(path, options,
                                providers=['CPUExecutionProvider'])


FLOAT_KERNELS = ('Conv', 'FusedConv', 'NchwcConv', 'Gemm', 'FusedGemm',
                 'MatMul', 'FusedMatMul')


def optimized_ops(path: str, work_dir: str) -> Dict[str, object]:
    """The graph onnxruntime runs for ``path`` (all optimizations, this
    CPU): the count of each op type, and the names of the convolutions and
    matrix products left in floating point."""
    import onnx
    optimized = os.path.join(work_dir, 'optimized.onnx')
    ort_session(path, optimized_path=optimized)
    nodes = onnx.load(optimized).graph.node
    counts: Dict[str, int] = {}
    for node in nodes:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(counts=counts, float_layers=[
        n.name for n in nodes if n.op_type in FLOAT_KERNELS])


def ort_runner(path: str, threads: Optional[int] = None) -> Runner:
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_compiled(path: str, threads: Optional[int] = None):
    """An OpenVINO CPU model of the ONNX (or IR) file ``path``."""
    import openvino as ov
    # f32: on CPUs with AMX or AVX512-BF16, OpenVINO would otherwise run
    # the float parts (pools, requantization, FP32 models) in bfloat16.
    config = {'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'}
    if threads:
        config['INFERENCE_NUM_THREADS'] = threads
    return ov.Core().compile_model(path, 'CPU', config)


def openvino_runner(path: str, threads: Optional[int] = None) -> Runner:
    compiled = openvino_compiled(path, threads)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0]


def openvino_int8_layers(path: str, threads: Optional[int] = None
                         ) -> Dict[str, int]:
    """Counts of the convolutions and matmuls OpenVINO's CPU plugin runs,
    by the precision of their kernels (its runtime model after a first
    inference on zeros of the model's static shape with batch 1)."""
    compiled = openvino_compiled(path, threads)
    shape = [1] + [d.get_length() for d in
                   list(compiled.inputs[0].get_partial_shape())[1:]]
    compiled.create_infer_request().infer({0: np.zeros(shape, np.float32)})
    counts: Dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info['layerType'].astype(str) if 'layerType' in info else ''
        if layer in ('Convolution', 'FullyConnected', 'MatMul',
                     'GroupConvolution'):
            precision = info['runtimePrecision'].astype(str) \
                if 'runtimePrecision' in info else '?'
            key = f'{layer}:{precision}'
            counts[key] = counts.get(key, 0) + 1
    return counts


def ort_quantize_static(float_path: str, out: str,
                        calibration: np.ndarray, batch_size: int = 64
                        ) -> str:
    """onnxruntime's own int8 quantizer on the FP32 model: MinMax
    calibration on ``calibration`` (preprocessed images), per-channel INT8
    weights, UINT8 activations, QDQ format: what a user gets without
    mmlapq."""
    from onnxruntime.quantization import (CalibrationDataReader,
                                          CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import \
        quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([calibration[i:i + batch_size] for i in
                                 range(0, len(calibration), batch_size)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {'input': batch}

    prepared = out + '.prepared.onnx'
    try:
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, out, Reader(),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)
    return out


def nncf_quantize(float_path: str, out: str, calibration: np.ndarray,
                  batch_size: int = 64) -> str:
    """NNCF's int8 post-training quantization of the FP32 ONNX model for
    OpenVINO (its defaults, ``calibration`` as the dataset), saved as
    OpenVINO IR ``out`` (.xml)."""
    import nncf
    import openvino as ov
    model = ov.Core().read_model(float_path)
    batches = [calibration[i:i + batch_size]
               for i in range(0, len(calibration), batch_size)]
    quantized = nncf.quantize(model, nncf.Dataset(batches),
                              subset_size=len(calibration))
    ov.save_model(quantized, out)
    return out


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
