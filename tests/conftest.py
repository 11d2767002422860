import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_TEST_IMAGES = os.path.join(REPO, 'data', 'fashion_mnist',
                                  't10k-images-idx3-ubyte')


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'gpu: runs on a CUDA device; skipped (with the reason) '
        'where there is none')
    config.addinivalue_line(
        'markers', 'slow: end-to-end runs of the tools in a subprocess '
        '(minutes); CI runs them, -m "not slow" skips them')


@pytest.fixture
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
