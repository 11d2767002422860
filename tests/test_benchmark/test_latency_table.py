"""The latency table of a mixed-precision latency budget
(benchmark/latency_table.py): every layer of the toy classifier timed in
onnxruntime at each candidate width, in the form lapq.mixed reads back."""
import torch
from mmengine.runner import Runner
from toy_runner import toy_config

import mmlapq  # noqa: F401
from mmlapq.benchmark.latency_table import latency_table
from mmlapq.export.onnxruntime import module_of_node
from mmlapq.lapq.mixed import MixedSettings, cost_model
from mmlapq.quant import QuantSettings


def test_every_layer_at_every_candidate_width(tmp_path):
    cfg = toy_config(str(tmp_path / 'wd'))
    cfg.model.backbone.depth = 3
    model = Runner.from_cfg(cfg).model
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'float.pth')
    table = latency_table(cfg, str(tmp_path / 'float.pth'), (4, 8), (8, ),
                          runs=3)
    rows = table['layers']
    assert list(rows) == ['backbone.layers.0', 'backbone.layers.3',
                          'backbone.layers.5', 'head.fc']
    assert set(rows['backbone.layers.3']) == {'w4a8', 'w8a8'}
    assert set(rows['backbone.layers.0']) == {'w8a8'}  # the first layer
    assert all(ms > 0 for row in rows.values() for ms in row.values())
    path = tmp_path / 'latency.json'
    import json
    path.write_text(json.dumps(table))
    settings = MixedSettings(dict(latency=1e3, table=str(path)),
                             w_candidates=(4, 8), a_candidates=(8, ))
    costs = cost_model(model, torch.randn(1, 3, 8, 8), QuantSettings(),
                       settings)
    assert costs.minimum() == sum(min(row.values()) for row in rows.values())


def test_node_names_give_module_paths():
    assert module_of_node('/model/backbone/layer1/layer1.0/conv1/'
                          'Conv_token_3_kernel_time') == \
        'backbone.layer1.0.conv1'
    assert module_of_node('/model/head/fc/Gemm_kernel_time') == 'head.fc'


def test_a_runs_trailing_ops_do_not_count_to_the_next_run():
    """Known answer on profile events of three runs: the float ops just
    before a kernel count to it, the ops after a run's last kernel to
    none, so every run's first kernel has its own time."""
    from mmlapq.export.onnxruntime import layer_times

    def node(name, op, dur):
        return dict(cat='Node', name=f'/model/{name}/X_kernel_time',
                    dur=dur, args=dict(op_name=op))

    run = [node('conv1', 'QuantizeLinear', 5), node('conv1', 'QLinearConv',
                                                    100),
           node('fc', 'DequantizeLinear', 7), node('fc', 'QGemm', 20),
           node('fc', 'Softmax', 1000),  # after the last kernel
           dict(cat='Session', name='SequentialExecutor::Execute', dur=1),
           dict(cat='Session', name='model_run', dur=2000)]
    times = layer_times(run * 3)
    assert times == {'conv1': 0.105, 'fc': 0.027}
