"""onnxruntime (export/onnxruntime.py): its own int8 quantizer, the user's
alternative, made from the same float model."""
import torch
from mmengine.registry import MODELS, init_default_scope
from test_onnx_qdq import images, integer_kernels
from toy_runner import toy_config

from mmlapq.benchmark.timing import top1
from mmlapq.export import export_qdq
from mmlapq.export.onnxruntime import ort_quantize_static, ort_runner


def test_onnxruntime_quantize_static_is_the_baseline(tmp_path):
    """The user's alternative, made from the same float model: its convs
    and its Gemm run onnxruntime's integer kernels too."""
    init_default_scope('mmcls')
    torch.manual_seed(0)
    model = MODELS.build(toy_config(str(tmp_path)).model).eval()
    fp32 = str(tmp_path / 'fp32.onnx')
    export_qdq(model, images(2), fp32)
    int8 = ort_quantize_static(fp32, str(tmp_path / 'int8.onnx'),
                               images(32).numpy(), batch_size=8)
    assert not [p for p in tmp_path.iterdir() if 'prepared' in p.name]
    ops = integer_kernels(int8, tmp_path)
    assert ops['float_layers'] == [] and ops['counts']['QLinearConv'] == 2
    x = images(16).numpy()
    labels = model(torch.from_numpy(x), mode='tensor').argmax(1).numpy()
    result = top1(ort_runner(fp32, threads=1), [(x, labels)], batch_size=5)
    assert result['top1'] == 100.0  # the float model agrees with itself


def test_onnxruntime_quantize_dynamic_quantizes_at_run_time(tmp_path):
    """onnxruntime's dynamic int8 model (the transformers' baseline in
    docs/deployment.md): its inputs are quantized at run time
    (DynamicQuantizeLinear), its weights stored as INT8, and nothing of its
    pre-processing is left behind."""
    import onnx

    from mmlapq.export.onnxruntime import ort_quantize_dynamic
    init_default_scope('mmcls')
    torch.manual_seed(0)
    model = MODELS.build(toy_config(str(tmp_path)).model).eval()
    fp32 = str(tmp_path / 'fp32.onnx')
    export_qdq(model, images(2), fp32)
    out = ort_quantize_dynamic(fp32, str(tmp_path / 'dynamic.onnx'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['dynamic.onnx',
                                                          'fp32.onnx']
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert 'DynamicQuantizeLinear' in ops, ops
    x = images(16).numpy()
    ref = model(torch.from_numpy(x), mode='tensor').detach().numpy()
    scores = ort_runner(out, threads=1)(x)
    assert scores.shape == ref.shape
    assert (scores.argmax(1) == ref.argmax(1)).mean() >= 0.75


def test_onnxruntime_smoothquant_runs_where_a_scalar_mul_precedes_a_matmul(
        tmp_path):
    """onnxruntime's SmoothQuant option (the transformers' baseline):
    GELU ends in a Mul by 0.5, into which neural-compressor 2.6 cannot fold
    a per-channel scale; kept as Mul nodes, the model is built and agrees
    with the float one."""
    import numpy as np
    import pytest
    pytest.importorskip('neural_compressor')
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(),
                                torch.nn.Linear(32, 4)).eval()
    fp32 = str(tmp_path / 'fp32.onnx')
    torch.onnx.export(model, torch.randn(2, 16), fp32, input_names=['input'],
                      dynamic_axes={'input': {0: 'batch'}}, opset_version=17,
                      dynamo=False)  # GELU as Div, Erf, Add, Mul, Mul
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    out = ort_quantize_static(fp32, str(tmp_path / 'sq.onnx'), x,
                              batch_size=16, smooth_quant=True)
    ref = model(torch.from_numpy(x)).detach().numpy()
    scores = ort_runner(out, threads=1)(x)
    assert (scores.argmax(1) == ref.argmax(1)).mean() >= 0.9
