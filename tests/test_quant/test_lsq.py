"""Known answers for the learned activation step (LSQ): its forward is the
grid's own quantization, and autograd gives LSQ's step gradient
(round(x/s) - x/s inside the clip, qmin or qmax outside) and input
gradient (1 inside, 0 outside)."""
import pytest
import torch

from mmlapq.quant.grids import Grid
from mmlapq.quant.lsq import LearnedStep
from mmlapq.quant.qmodules import TensorQuantizer


def quantizer(kind='unsigned', bits=4, alpha=3.0):
    q = TensorQuantizer(Grid(bits, kind))
    q.set_alpha(alpha)
    return q


@pytest.mark.parametrize('kind', ['unsigned', 'signed', 'signed_full'])
def test_forward_is_the_grids_quantization(kind):
    q = quantizer(kind)
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3
    want = q(x)
    q.set_learned_step(LearnedStep(q))
    got = q(x)
    assert torch.allclose(got, want, atol=1e-6)
    q.set_learned_step(None)
    assert torch.equal(q(x), want)


def test_gradients_are_lsqs():
    q = quantizer('unsigned', bits=2, alpha=3.0)  # step 1, codes 0..3
    step = LearnedStep(q)
    x = torch.tensor([0.2, 1.4, 2.5001, 5.0, -1.0], requires_grad=True)
    out = step(x)
    assert out.tolist() == pytest.approx([0.0, 1.0, 3.0, 3.0, 0.0])
    d_alpha, d_x = torch.autograd.grad(out.sum(), [step.log_ratio, x])
    # d out / d s per element: round(x/s) - x/s inside, qmax above, qmin
    # below; s = alpha / 3 and d s / d log_ratio = s = 1
    per_element = [0 - 0.2, 1 - 1.4, 3 - 2.5001, 3.0, 0.0]
    assert float(d_alpha) == pytest.approx(sum(per_element), abs=1e-5)
    assert d_x.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_a_learned_step_needs_a_per_tensor_integer_grid():
    assert LearnedStep.fits(quantizer('unsigned'))
    assert not LearnedStep.fits(quantizer('midrise'))
    assert not LearnedStep.fits(TensorQuantizer(Grid(4, 'unsigned')))
    with pytest.raises(ValueError, match='per-tensor'):
        LearnedStep(quantizer('midrise'))
    per_channel = TensorQuantizer(Grid(4, 'signed'), channel_axis=0)
    per_channel.set_alpha(torch.ones(3))
    assert not LearnedStep.fits(per_channel)
    with pytest.raises(ValueError, match='per-tensor'):
        LearnedStep(per_channel)
    with pytest.raises(ValueError, match='initialise'):
        LearnedStep(TensorQuantizer(Grid(4, 'unsigned')))
