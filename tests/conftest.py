import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# Two threads (CI's machine), unless OMP_NUM_THREADS asks for another count:
# the suite must pass with 1 and 2 (oneDNN picks kernels by thread count).
if 'OMP_NUM_THREADS' not in os.environ:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_TEST_IMAGES = os.path.join(REPO, 'data', 'fashion_mnist',
                                  't10k-images-idx3-ubyte')
# The test pass of fmnist_w4a4_run: the first 1000 test images.
FMNIST_SLICE = 'test_dataloader.dataset.indices=1000'


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'gpu: runs on a CUDA device; skipped (with the reason) '
        'where there is none')
    config.addinivalue_line(
        'markers', 'slow: end-to-end runs of the tools in a subprocess '
        '(minutes); CI runs them, -m "not slow" skips them')
    config.addinivalue_line(
        'markers', 'mmpretrain: needs mmpretrain (and mmcls, to compare); '
        "CI's second job runs them in a venv that has both")


@pytest.fixture
def mmpretrain():
    """Tests on mmpretrain: skipped where it is not installed, failed where
    MMLAPQ_EXPECT_MMPRETRAIN=1 says it must be (CI's mmpretrain job)."""
    import importlib.util
    if importlib.util.find_spec('mmpretrain') is None:
        message = ('mmpretrain is not installed: bash tools/setup.sh '
                   'mmpretrain (README "Quick start")')
        if os.environ.get('MMLAPQ_EXPECT_MMPRETRAIN') == '1':
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope='session')
def fmnist_data():
    """Tests that read Fashion-MNIST: skipped on a developer's machine
    without the data, failed under CI (CI=true), where setup must have
    made it."""
    if not os.path.isfile(FMNIST_TEST_IMAGES):
        message = ('Fashion-MNIST is not in data/fashion_mnist: run '
                   'bash tools/setup.sh')
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)


def skip_where_int8_pairs_saturate():
    """Numbers of onnxruntime's / OpenVINO's int8 kernels against PyTorch:
    exact only where the CPU does not saturate u8s8 pair sums
    (mmlapq/export/cpu.py). Called after a test's graph checks, so those
    run on every CPU."""
    from mmlapq.export.cpu import SATURATION_NOTE, int8_pairs_saturate
    if int8_pairs_saturate():
        pytest.skip(SATURATION_NOTE)


@pytest.fixture(scope='session')
def fmnist_w4a4_run(tmp_path_factory, fmnist_data):
    """The embedded default's main job (configs/lapq/vgg11bn_fmnist_w4a4.py)
    run once by tools/quantize.py on a slice: its own test pass on the
    first 1000 test images, 256 calibration images, 40 evaluations.
    test_fmnist_main_job checks its report and reload; test_fmnist_export
    exports it. Returns its work dir and what it printed."""
    import subprocess
    work_dir = str(tmp_path_factory.mktemp('fmnist') / 'w4a4')
    proc = subprocess.run(
        [sys.executable, 'tools/quantize.py',
         os.path.join(REPO, 'configs', 'lapq', 'vgg11bn_fmnist_w4a4.py'),
         '--work-dir', work_dir, '--calib-images', '256', '--max-evals', '40',
         '--cfg-options', FMNIST_SLICE, 'quantizer.init.p_grid=[2.0,3.0,4.0]'],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work_dir, proc.stdout
