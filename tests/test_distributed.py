"""Distributed calibration: two CPU processes (gloo) against one."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'lapq', 'vgg11bn_fmnist_w4a4.py')
FMNIST = osp.join(REPO, 'data', 'fashion_mnist', 't10k-images-idx3-ubyte')
SMALL = ['test_dataloader.dataset.indices=200', 'test_dataloader.batch_size=50',
         'quantizer.calib.batch_size=16', 'quantizer.init.p_grid=[2.0,3.0,4.0]',
         'quantizer.search.maxiter=1', 'quantizer.bias_correction=empirical']

pytestmark = pytest.mark.skipif(
    not osp.isfile(FMNIST), reason='run tools/setup.sh (Fashion-MNIST data)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, env=None):
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


def test_two_processes_match_one(tmp_path):
    # The trained checkpoint, not a random one: a random model's loss is
    # flat in the clips (about ln 10 everywhere), so the fit of p* and the
    # search would amplify rounding noise instead of following the loss.
    common = ['--calib-images', '64', '--max-evals', '40', '--cfg-options',
              *SMALL]
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    # One thread per process in both runs: oneDNN picks its kernels (and so
    # its float summation order) by thread count.
    single_thread = dict(OMP_NUM_THREADS='1')
    run([sys.executable, 'tools/quantize.py', CONFIG, '--work-dir', one,
         *common], env=single_thread)
    run(['bash', 'tools/dist_quantize.sh', CONFIG, '2', '--work-dir', two,
         *common], env=dict(single_thread, PORT=str(free_port())))
    a = json.load(open(osp.join(one, 'lapq_report.json')))
    b = json.load(open(osp.join(two, 'lapq_report.json')))
    assert (a['world_size'], b['world_size']) == (1, 2)
    assert b['calibration']['num_images'] == 64
    for key in ('init', 'lapq'):
        assert b[key]['calib_loss'] == pytest.approx(a[key]['calib_loss'],
                                                     rel=1e-5)
    assert b['init']['p'] == pytest.approx(a['init']['p'], rel=1e-5)
    assert b['lapq']['func_evals'] == a['lapq']['func_evals']
    for la, lb in zip(a['layers'], b['layers']):
        for clip in ('w_clip', 'a_clip'):
            assert lb[clip] == pytest.approx(la[clip], rel=1e-5), la['name']
    # The test set is split by mmengine's sampler; the metric is global.
    assert b['quantized']['top1'] == pytest.approx(a['quantized']['top1'])
    # Written once: a single report and checkpoint, no partial files.
    files = sorted(f for f in os.listdir(two) if not f[0].isdigit())
    assert files == ['lapq_quantized.pth', 'lapq_report.json',
                     'lapq_report.md', 'plots', 'vgg11bn_fmnist_w4a4.py']
