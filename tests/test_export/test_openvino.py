"""OpenVINO (export/openvino.py): its CPU plugin runs our QDQ file on its
int8 kernels and computes what PyTorch computes."""
import numpy as np
import pytest
from conftest import skip_where_int8_pairs_saturate
from test_onnx_qdq import images, quantized_toy, run_both

from mmlapq.export import export_qdq
from mmlapq.export.openvino import (openvino_available, openvino_int8_layers,
                                    openvino_runner)


@pytest.mark.skipif(not openvino_available(), reason='openvino is not '
                    'installed (tools/setup.sh installs it)')
@pytest.mark.parametrize('bits', [8, 4])
def test_openvino_runs_our_file_on_int8_kernels(tmp_path, bits):
    model = quantized_toy(tmp_path, bits, bits)
    path = str(tmp_path / 'toy.onnx')
    export_qdq(model, images(2), path)
    kernels = openvino_int8_layers(path, threads=1)
    assert kernels == {'Convolution:u8': 2, 'FullyConnected:u8': 1}
    skip_where_int8_pairs_saturate()
    ref, _ = run_both(model, path, images())
    out = openvino_runner(path, threads=1)(images().numpy())
    assert (ref.argmax(1) == out.argmax(1)).all()
    assert np.abs(out - ref).max() < 1e-4
