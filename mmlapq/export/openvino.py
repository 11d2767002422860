"""The exported models in OpenVINO (CPU plugin): compiled models, the
precision of the kernels it runs, and NNCF's int8 quantizer (the user's
alternative to mmlapq on OpenVINO). Needs ``openvino`` (and ``nncf`` for
its quantizer), imported only when used."""
from typing import Callable, Dict, Optional, Sequence

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_compiled(path: str, shape: Sequence[int],
                      threads: Optional[int] = None):
    """An OpenVINO CPU model of the ONNX (or IR) file ``path``, compiled
    for the static input ``shape``.

    Why a static shape: OpenVINO recommends it on CPU, and with a dynamic
    batch its CPU plugin (2026.4) computed other numbers than the graph
    says on our ViT exports: a conv whose output quantizer it did not fuse
    (DeiT's patch embedding, followed by the class-token concat) got the
    bias of its first channel on every channel, 28% of DeiT W8A8's
    predictions changed. With the batch fixed it fuses the quantizer and
    agrees with onnxruntime."""
    import openvino as ov
    # f32: on CPUs with AMX or AVX512-BF16, OpenVINO would otherwise run
    # the float parts (pools, requantization, FP32 models) in bfloat16.
    config = {'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'}
    if threads:
        config['INFERENCE_NUM_THREADS'] = threads
    core = ov.Core()
    model = core.read_model(path)
    model.reshape(list(shape))
    return core.compile_model(model, 'CPU', config)


def openvino_inference(path: str, threads: Optional[int] = None
                       ) -> Callable[[np.ndarray], object]:
    """A function of a batch giving all the model's outputs (OpenVINO's
    results, keyed by output port), compiled once for each input shape it
    meets (see :func:`openvino_compiled`)."""
    requests: Dict[tuple, object] = {}

    def infer(x: np.ndarray):
        if x.shape not in requests:
            requests[x.shape] = openvino_compiled(
                path, x.shape, threads).create_infer_request()
        return requests[x.shape].infer({0: x})
    return infer


def openvino_runner(path: str, threads: Optional[int] = None) -> Runner:
    """A function of a batch giving the model's first output."""
    infer = openvino_inference(path, threads)
    return lambda x: infer(x)[0]


def openvino_int8_layers(path: str, threads: Optional[int] = None
                         ) -> Dict[str, int]:
    """Counts of the convolutions and matmuls OpenVINO's CPU plugin runs,
    by the precision of their kernels (its runtime model after a first
    inference on zeros of the model's input shape with batch 1)."""
    import openvino as ov
    dims = list(ov.Core().read_model(path).inputs[0].get_partial_shape())
    shape = [1] + [d.get_length() for d in dims[1:]]
    compiled = openvino_compiled(path, shape, threads)
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


def nncf_quantize(float_path: str, out: str, calibration: np.ndarray,
                  batch_size: int = 64, transformer: bool = False) -> str:
    """NNCF's int8 post-training quantization of the FP32 ONNX model for
    OpenVINO (its defaults, ``calibration`` as the dataset), saved as
    OpenVINO IR ``out`` (.xml). ``transformer``: its transformer preset
    (``model_type=ModelType.TRANSFORMER``: SmoothQuant on the MatMuls,
    LayerNorm, softmax and adds left float)."""
    import nncf
    import openvino as ov
    model = ov.Core().read_model(float_path)
    batches = [calibration[i:i + batch_size]
               for i in range(0, len(calibration), batch_size)]
    extra = dict(model_type=nncf.ModelType.TRANSFORMER) if transformer \
        else {}
    quantized = nncf.quantize(model, nncf.Dataset(batches),
                              subset_size=len(batches),  # all of them
                              **extra)
    ov.save_model(quantized, out)
    return out
