"""The exported models in onnxruntime (CPU): sessions, the graph it runs,
and its own int8 quantizer (``quantize_static``, the user's alternative to
mmlapq). Needs onnxruntime."""
import os
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional

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


LAYER_KERNELS = FLOAT_KERNELS + ('QLinearConv', 'QGemm', 'QLinearMatMul',
                                 'MatMulInteger', 'ConvInteger')


def _profile_events(path: str, x: np.ndarray, runs: int,
                    threads: Optional[int], work_dir: Optional[str]
                    ) -> List[dict]:
    """onnxruntime's profile events of ``runs + 1`` runs on ``x``."""
    import json
    import tempfile
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        options.profile_file_prefix = os.path.join(tmp, 'profile')
        session = ort.InferenceSession(path, options,
                                       providers=['CPUExecutionProvider'])
        name = session.get_inputs()[0].name
        for _ in range(runs + 1):
            session.run(None, {name: x})
        with open(session.end_profiling()) as f:
            return json.load(f)


def kernel_times_by_layer(path: str, x: np.ndarray, runs: int = 20,
                          threads: Optional[int] = 1,
                          work_dir: Optional[str] = None
                          ) -> Dict[str, float]:
    """Milliseconds per run of each conv / matrix-product kernel of
    ``path`` on ``x`` by the module it was exported from
    (``backbone.layer1.0.conv1``), from onnxruntime's profiler: the median
    over ``runs`` after one warm-up. The float ops just before a kernel (a
    requantization, a Clip on codes) count to it."""
    return layer_times(_profile_events(path, x, runs, threads, work_dir))


def op_type_times(path: str, x: np.ndarray, runs: int = 5,
                  threads: Optional[int] = None,
                  work_dir: Optional[str] = None) -> Dict[str, float]:
    """Milliseconds per run spent in each op type of the graph onnxruntime
    runs for ``path`` on ``x`` (all runs after one warm-up, averaged):
    where a model's time goes, next to another model of the same net."""
    events = _profile_events(path, x, runs, threads, work_dir)
    first = min((e for e in events if e.get('cat') == 'Session'
                 and e['name'] == 'model_run'), key=lambda e: e['ts'])
    warm = first['ts'] + first['dur']  # the warm-up run ends here
    total: Dict[str, float] = {}
    for event in events:
        if event.get('cat') == 'Node' and event['ts'] >= warm and \
                event['name'].endswith('_kernel_time'):
            op = event['args'].get('op_name', '?')
            total[op] = total.get(op, 0.0) + event['dur'] / 1e3
    return {op: ms / runs for op, ms in
            sorted(total.items(), key=lambda kv: -kv[1])}


def layer_times(events: List[dict]) -> Dict[str, float]:
    """Milliseconds of each layer's kernel per run, the median over the
    runs after the first (a warm-up), from onnxruntime's profile events:
    the float ops just before a kernel count to it; those after a run's
    last kernel count to none (each run starts afresh at its
    ``model_run`` event)."""
    times: Dict[str, list] = {}
    pending = 0.0
    for event in events:
        if event.get('cat') == 'Session' and event['name'] == 'model_run':
            pending = 0.0  # the run ended: its trailing ops are nobody's
            continue
        if event.get('cat') != 'Node' or \
                not event['name'].endswith('_kernel_time'):
            continue
        if event['args'].get('op_name') not in LAYER_KERNELS:
            pending += event['dur']
            continue
        module = module_of_node(event['name'])
        times.setdefault(module, []).append((pending + event['dur']) / 1e3)
        pending = 0.0
    return {module: float(np.median(t[1:])) for module, t in times.items()}


def module_of_node(node: str) -> str:
    """The module path of an exported node from its scope name:
    '/model/backbone/layer1/layer1.0/conv1/Conv_token_3_kernel_time' ->
    'backbone.layer1.0.conv1' (torch names a child of a Sequential
    'parent.index')."""
    parts = node.split('/')[1:-1]
    if parts and parts[0] == 'model':
        parts = parts[1:]
    name = []
    for part in parts:
        previous = name[-1] if name else None
        if previous is not None and part.startswith(previous + '.'):
            part = part[len(previous) + 1:]
        name.append(part)
    return '.'.join(name)


def ort_runner(path: str, threads: Optional[int] = None) -> Runner:
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _batches(calibration: np.ndarray, batch_size: int):
    return [calibration[i:i + batch_size]
            for i in range(0, len(calibration), batch_size)]


@contextmanager
def _prepared(float_path: str, out: str) -> Iterator[str]:
    """The FP32 model after onnxruntime's quantization pre-processing
    (shape inference, graph optimization), removed afterwards."""
    from onnxruntime.quantization.shape_inference import \
        quant_pre_process
    prepared = out + '.prepared.onnx'
    try:
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        yield prepared
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)


def ort_quantize_static(float_path: str, out: str,
                        calibration: np.ndarray, batch_size: int = 64,
                        smooth_quant: bool = False) -> str:
    """onnxruntime's own int8 quantizer on the FP32 model: MinMax
    calibration on ``calibration`` (preprocessed images), per-channel INT8
    weights, UINT8 activations, QDQ format: what a user gets without
    mmlapq. ``smooth_quant``: its SmoothQuant option (alpha 0.5, its
    default; needs the neural-compressor package), its scales kept as
    ``Mul`` nodes: folding them into the previous op (its default) fails in
    neural-compressor 2.6 where that op is a ``Mul`` by a scalar (GELU's,
    the attention's scale)."""
    from onnxruntime.quantization import (CalibrationDataReader,
                                          CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(_batches(calibration, batch_size))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {'input': batch}

    with _prepared(float_path, out) as prepared:
        quantize_static(prepared, out, Reader(),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options=dict(SmoothQuant=True,
                                           SmoothQuantFolding=False)
                        if smooth_quant else None)
    return out


def ort_quantize_dynamic(float_path: str, out: str) -> str:
    """onnxruntime's dynamic int8 quantizer on the FP32 model (its
    defaults: INT8 weights, activations quantized at run time from their
    own range), what onnxruntime recommends for transformers."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with _prepared(float_path, out) as prepared:
        quantize_dynamic(prepared, out, weight_type=QuantType.QInt8)
    return out
