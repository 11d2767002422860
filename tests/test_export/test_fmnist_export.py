"""The deployment path on the embedded default, end to end: the
Fashion-MNIST VGG-11-BN quantized at W4A4 by its main job (conftest's
fmnist_w4a4_run), the integer checkpoint's size, exported with no option
and run in onnxruntime on all 10,000 test images."""
import os.path as osp
import re
import subprocess
import sys

import onnx
import pytest
from conftest import skip_where_int8_pairs_saturate
from onnx import TensorProto

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'lapq', 'vgg11bn_fmnist_w4a4.py')


def tool(*args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_w4a4_checkpoint_and_onnx_match_pytorch(tmp_path, fmnist_w4a4_run):
    # The main job's run on a slice (conftest); the export check below uses
    # all 10,000 test images.
    work_dir, _ = fmnist_w4a4_run
    ckpt = osp.join(work_dir, 'lapq_quantized.pth')
    assert osp.getsize(ckpt) <= 6 * 10**6  # 36.9 MB as float weights
    onnx_path = str(tmp_path / 'w4a4.onnx')  # not in the shared work dir
    out = tool('tools/export.py', CONFIG, ckpt, '--out', onnx_path,
               '--verify')
    stored = {t.name: t.data_type for t in onnx.load(onnx_path).graph
              .initializer if t.name.endswith('_quantized')}
    # INT8 weights at every width (what integer kernels run), INT32 biases
    assert {n: t for n, t in stored.items() if n.endswith('weight_quantized')
            } and set(stored.values()) == {TensorProto.INT8,
                                           TensorProto.INT32}
    skip_where_int8_pairs_saturate()
    found = re.search(r'on (\d+) test images: top-1 ([\d.]+) vs ([\d.]+), '
                      r'predictions agree on ([\d.]+)%', out)
    images, top1_ort, top1_torch, agree = found.groups()
    assert int(images) == 10000
    assert abs(float(top1_ort) - float(top1_torch)) <= 0.05
    assert float(agree) >= 99.9

    # The two runtimes compared per quantizer: one row per activation
    # quantizer of the file, in graph order, from the input's on.
    from mmlapq.export.openvino import openvino_available
    if openvino_available():
        out = tool('tools/export.py', CONFIG, ckpt, '--out',
                   str(tmp_path / 'div.onnx'), '--divergence', '64')
        found = re.search(r'on 64 test images: predictions agree on '
                          r'([\d.]+)%', out)
        assert found and float(found.group(1)) >= 95.0, out[-2000:]
        import json
        rows = json.load(open(tmp_path / 'div_divergence.json'))['rows']
        from mmlapq.export.divergence import activation_dequantizers
        assert [r['tensor'] for r in rows] == list(activation_dequantizers(
            onnx.load(str(tmp_path / 'div.onnx'))))
        assert rows[0]['place'].endswith('input -> Conv')
        assert rows[0]['codes_differing'] == 0.0  # the image's own codes
