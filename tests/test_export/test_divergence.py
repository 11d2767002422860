"""Per-quantizer code comparison of two runs of an exported QDQ model, on
a hand-built graph with a known answer."""
import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mmlapq.export.divergence import (activation_dequantizers,  # noqa: E402
                                      code_divergence, dequantizer_places,
                                      onnxruntime_outputs, runtime_divergence,
                                      with_outputs)
from mmlapq.export.openvino import openvino_available  # noqa: E402


def _qdq_linear(path: str, bias: np.ndarray) -> str:
    """x -> Q/DQ (step 0.1) -> MatMul(identity, its weight a DQ of int8
    codes) -> Add(bias) -> Q/DQ (step 0.1) -> y."""
    init = [numpy_helper.from_array(np.float32(0.1), 'step'),
            numpy_helper.from_array(np.int8(0), 'zero'),
            numpy_helper.from_array(np.eye(4, dtype=np.int8), 'w_codes'),
            numpy_helper.from_array(np.float32(1.0), 'w_step'),
            numpy_helper.from_array(bias.astype(np.float32), 'bias')]
    nodes = [
        helper.make_node('QuantizeLinear', ['x', 'step', 'zero'], ['xq'],
                         name='/in/QuantizeLinear'),
        helper.make_node('DequantizeLinear', ['xq', 'step', 'zero'], ['xd'],
                         name='/in/DequantizeLinear'),
        helper.make_node('DequantizeLinear', ['w_codes', 'w_step', 'zero'],
                         ['w'], name='/fc/DequantizeLinear_w'),
        helper.make_node('MatMul', ['xd', 'w'], ['mm'], name='/fc/MatMul'),
        helper.make_node('Add', ['mm', 'bias'], ['pre'], name='/fc/Add'),
        helper.make_node('QuantizeLinear', ['pre', 'step', 'zero'], ['yq'],
                         name='/out/QuantizeLinear'),
        helper.make_node('DequantizeLinear', ['yq', 'step', 'zero'], ['y'],
                         name='/out/DequantizeLinear')]
    graph = helper.make_graph(
        nodes, 'qdq', [helper.make_tensor_value_info('x', TensorProto.FLOAT,
                                                     [None, 4])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [None, 4])],
        init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('',
                                                                        17)])
    onnx.save(model, path)
    return path


def test_a_shifted_bias_moves_exactly_its_channel_after_the_shift(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (64, 4)).astype(np.float32)
    x = np.round(x / 0.1) * 0.1 + 0.02  # away from rounding boundaries
    reference = _qdq_linear(str(tmp_path / 'a.onnx'), np.zeros(4))
    shifted = _qdq_linear(str(tmp_path / 'b.onnx'),
                          np.array([0, 0, 0.1, 0]))  # one step on channel 2
    steps = activation_dequantizers(onnx.load(reference))
    assert steps == pytest.approx({'xd': 0.1, 'y': 0.1})  # not the weight's
    places = dequantizer_places(onnx.load(reference))
    assert places == {'xd': 'in: input -> MatMul', 'y': 'out: Add -> output'}
    runs = [onnxruntime_outputs(with_outputs(p, list(steps),
                                             str(tmp_path / f'{i}.onnx')))
            for i, p in enumerate((reference, shifted))]
    rows = code_divergence(steps, [(runs[0](x[:32]), runs[1](x[:32])),
                                   (runs[0](x[32:]), runs[1](x[32:]))])
    by_name = {row['tensor']: row for row in rows}
    assert by_name['xd']['codes_differing'] == 0.0
    assert by_name['y']['codes_differing'] == pytest.approx(25.0)  # 1 of 4
    assert by_name['y']['max_steps'] == 1.0


@pytest.mark.skipif(not openvino_available(), reason='openvino is not '
                    'installed (tools/setup.sh installs it)')
def test_openvino_and_onnxruntime_agree_on_a_graph_without_float_sums(
        tmp_path):
    """No float op between the two quantizers but an exact identity and an
    add of zero: a runtime that moves a code here drops or changes a
    rounding."""
    x = np.random.default_rng(1).uniform(-1, 1, (16, 4)).astype(np.float32)
    path = _qdq_linear(str(tmp_path / 'a.onnx'), np.zeros(4))
    res = runtime_divergence(path, [x[:8], x[8:]])
    rows = res['rows']
    assert res['images'] == 16 and res['predictions_agree'] == 100.0
    assert [row['place'] for row in rows] == ['in: input -> MatMul',
                                              'out: Add -> output']
    assert all(row['codes_differing'] == 0.0 for row in rows)
