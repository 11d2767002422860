"""Running exported models (export/runtimes.py): interleaved timing,
onnxruntime's own int8 baseline, and OpenVINO's int8 kernels on our QDQ
file."""
import numpy as np
import pytest
import torch
from mmengine.registry import MODELS, init_default_scope
from test_onnx_qdq import images, integer_kernels, quantized_toy, run_both
from toy_runner import toy_config

from mmlapq.export import export_qdq
from mmlapq.export.runtimes import openvino_available


def test_interleaved_latency_takes_turns():
    from mmlapq.export.runtimes import interleaved_latency
    calls = []

    def runner(name):
        return lambda x: calls.append(name)

    times = interleaved_latency({'a': runner('a'), 'b': runner('b')},
                                np.zeros(1), rounds=4, warmup=1)
    assert calls == ['a', 'b'] * 5
    assert times['a']['ratio_to_first'] == 1.0
    for row in times.values():
        assert 0 < row['min_s'] <= row['median_s'] <= row['max_s']


def test_onnxruntime_quantize_static_is_the_baseline(tmp_path):
    """The user's alternative, made from the same float model: its convs
    and its Gemm run onnxruntime's integer kernels too."""
    from mmlapq.export.runtimes import ort_quantize_static, top1
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
    result = top1(ort_runner_of(fp32), [(x, labels)], batch_size=5)
    assert result['top1'] == 100.0  # the float model agrees with itself


def ort_runner_of(path):
    from mmlapq.export.runtimes import ort_runner
    return ort_runner(path, threads=1)


@pytest.mark.skipif(not openvino_available(), reason='openvino is not '
                    'installed (tools/setup.sh installs it)')
@pytest.mark.parametrize('bits', [8, 4])
def test_openvino_runs_our_file_on_int8_kernels(tmp_path, bits):
    from mmlapq.export.runtimes import openvino_int8_layers, openvino_runner
    model = quantized_toy(tmp_path, bits, bits)
    path = str(tmp_path / 'toy.onnx')
    export_qdq(model, images(2), path)
    kernels = openvino_int8_layers(path, threads=1)
    assert kernels == {'Convolution:u8': 2, 'FullyConnected:u8': 1}
    ref, _ = run_both(model, path, images())
    out = openvino_runner(path, threads=1)(images().numpy())
    assert (ref.argmax(1) == out.argmax(1)).all()
    assert np.abs(out - ref).max() < 1e-4


def test_benchmark_tool_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    import importlib.util
    import os.path as osp
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        'benchmark_onnx', osp.join(repo, 'tools', 'benchmark_onnx.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = osp.join(repo, 'configs', 'lapq', 'vgg11bn_fmnist_w4a4.py')
    assert tool.main([config, 'model.onnx']) == 2
    err = capsys.readouterr().err
    assert 'is not LABEL=FILE.onnx' in err and len(err.splitlines()) == 1
    missing = str(tmp_path / 'none.onnx')
    assert tool.main([config, f'w4a4={missing}', '--out',
                      str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    assert 'does not exist: write it with tools/export.py' in err
    assert not (tmp_path / 'out').exists()  # nothing half-written
