"""The runtime benchmark's pieces (benchmark/timing.py, onnx_runtimes.py):
latency in turns, and the tool's one-line refusals."""
import numpy as np


def test_interleaved_latency_takes_turns():
    from mmlapq.benchmark.timing import interleaved_latency
    calls = []

    def runner(name):
        return lambda x: calls.append(name)

    times = interleaved_latency({'a': runner('a'), 'b': runner('b')},
                                np.zeros(1), rounds=4, warmup=1)
    assert calls == ['a', 'b'] * 5
    assert times['a']['ratio_to_first'] == 1.0
    for row in times.values():
        assert 0 < row['min_s'] <= row['median_s'] <= row['max_s']


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
