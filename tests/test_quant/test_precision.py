"""TF32 switches through torch's fp32_precision API, and the wide dtype of
sums (no GPU needed: the switches are plain settings on a CPU build)."""
import pytest
import torch

from mmlapq.quant.precision import tf32_flags, tf32_mode, wide_dtype


@pytest.fixture
def global_precision_set():
    """A program (or library) that set the global fp32 precision: reading
    the legacy cuDNN allow_tf32 flag raises from then on (torch 2.9+)."""
    if not hasattr(torch.backends, 'fp32_precision'):
        pytest.skip('this torch has no fp32_precision API')
    switches = [torch.backends.cuda.matmul, torch.backends.cudnn.conv,
                torch.backends.cudnn.rnn]
    old = [torch.backends.fp32_precision] + [s.fp32_precision
                                             for s in switches]
    torch.backends.fp32_precision = 'ieee'
    torch.backends.cuda.matmul.fp32_precision = 'ieee'
    torch.backends.cudnn.conv.fp32_precision = 'ieee'
    torch.backends.cudnn.rnn.fp32_precision = 'tf32'  # conv and rnn differ
    yield
    torch.backends.fp32_precision = old[0]
    for s, value in zip(switches, old[1:]):
        s.fp32_precision = value


def test_switches_work_after_the_global_precision_was_set(
        global_precision_set):
    with pytest.raises(RuntimeError):  # the legacy flag the old code read
        torch.backends.cudnn.allow_tf32
    before = tf32_flags()
    with tf32_mode(True):
        assert tf32_flags() == dict(cuda_matmul=True, cudnn=True)
    assert tf32_flags() == before == dict(cuda_matmul=False, cudnn=False)


def test_tf32_mode_restores_the_switches_after_an_error():
    before = tf32_flags()
    with pytest.raises(KeyError):
        with tf32_mode(not before['cuda_matmul']):
            raise KeyError('x')
    assert tf32_flags() == before


def test_wide_dtype():
    assert wide_dtype('cpu') == torch.float64
    assert wide_dtype(torch.device('cuda', 0)) == torch.float64
    assert wide_dtype('mps') == torch.float32  # MPS has no float64
