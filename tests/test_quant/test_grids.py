import pytest
import torch

from mmlapq.quant import Grid, TensorQuantizer, check_bits


def q(kind, bits, alpha, values):
    return Grid(bits, kind).quantize(torch.tensor(values), alpha).tolist()


def test_signed_grids_by_hand():
    # 2 bit: levels {-a, 0, a}; 0.5 rounds to even (0).
    assert q('signed', 2, 1.0, [-2, -0.6, -0.4, 0.4, 0.5, 0.6, 2]) == \
        [-1, -1, 0, 0, 0, 1, 1]
    # 3 bit: integers -3..3 times a/3; a=3 makes the step 1.
    assert q('signed', 3, 3.0, [-5, -2.5, -1.4, 0.5, 1.5, 2.6, 7]) == \
        [-3, -2, -1, 0, 2, 3, 3]
    # 4 bit: -7..7.
    assert q('signed', 4, 7.0, [-9, -6.6, 0.2, 3.5, 6.5, 8]) == \
        [-7, -7, 0, 4, 6, 7]


def test_midrise_grids_by_hand():
    # 2 bit, a=1.5: four levels -1.5, -0.5, 0.5, 1.5 (step 1), no zero.
    assert q('midrise', 2, 1.5, [-3, -1, 0, 0.9, 1.2, 3]) == \
        [-1.5, -1.5, 0.5, 0.5, 1.5, 1.5]
    # 3 bit, a=3.5: eight levels -3.5..3.5 (step 1).
    assert q('midrise', 3, 3.5, [-4, -0.2, 0.2, 2.2, 9]) == \
        [-3.5, -0.5, 0.5, 2.5, 3.5]
    levels = Grid(4, 'midrise').levels(1.0)
    assert len(levels) == 16 and 0.0 not in levels.tolist()


def test_unsigned_grids_by_hand():
    assert q('unsigned', 2, 3.0, [-1, 0.4, 1.5, 2.5, 9]) == [0, 0, 2, 2, 3]
    assert q('unsigned', 4, 15.0, [-3, 7.4, 14.6, 20]) == [0, 7, 15, 15]
    assert q('unsigned', 3, 7.0, [3.5, 4.5, 6.9]) == [4, 4, 7]


@pytest.mark.parametrize('kind,count', [('signed', 15), ('midrise', 16),
                                        ('unsigned', 16)])
def test_level_counts(kind, count):
    assert len(Grid(4, kind).levels(1.0)) == count


@pytest.mark.parametrize('bits', [1, 0, 17, 4.5, True, '4', None])
def test_bad_bits_is_a_clear_error(bits):
    with pytest.raises(ValueError, match='use an integer from 2 to 16'):
        check_bits(bits)


def test_bad_grid_kind():
    with pytest.raises(ValueError, match='grid kind'):
        Grid(4, 'asymmetric')


def half_steps(step: float) -> torch.Tensor:
    """Values on level midpoints of a grid of ``step``: where dividing by
    the step and multiplying by 1/step round differently."""
    return (torch.arange(-200, 200, dtype=torch.float32) + 0.5) * step


@pytest.mark.parametrize('kind', ['signed', 'unsigned', 'midrise'])
@pytest.mark.parametrize('bits', [2, 4, 8, 16])
def test_quantizer_divides_by_the_step_as_onnx_does(kind, bits):
    """One rounding rule everywhere: round(x / step), ties to even, as ONNX
    QuantizeLinear (per-tensor and per-channel quantizers alike)."""
    torch.manual_seed(bits)
    grid = Grid(bits, kind)
    tq = TensorQuantizer(grid)
    tq.set_alpha(1.7)
    alpha = float(tq.alpha)  # clips are stored in float32
    step = grid.step(alpha)
    x = torch.cat([torch.randn(10000) * 2, half_steps(step)])
    assert torch.equal(tq(x), grid.quantize(x, alpha))
    per_channel = TensorQuantizer(grid, channel_axis=0)
    per_channel.set_alpha(torch.full((2, ), 1.7))
    assert torch.equal(per_channel(x.view(2, -1)), tq(x).view(2, -1))
    if kind != 'midrise':
        low = -grid.qmax if kind == 'signed' else 0
        assert torch.equal(tq(x), torch.clamp(torch.round(x / step), low,
                                              grid.qmax) * step)


def test_half_steps_tell_division_from_multiplication():
    """The data of the test above can trip a quantizer that multiplies by
    1/step (torch's fused fake_quantize ops do)."""
    step = Grid(8, 'signed').step(1.7)
    x = half_steps(step)
    fused = torch.fake_quantize_per_tensor_affine(x, step, 0, -127, 127)
    assert not torch.equal(fused, Grid(8, 'signed').quantize(x, 1.7))


def test_quantizer_errors():
    tq = TensorQuantizer(Grid(4))
    with pytest.raises(RuntimeError, match='no clip value'):
        tq(torch.ones(3))
    with pytest.raises(ValueError, match='finite and > 0'):
        tq.set_alpha(-1.0)
    tq.set_alpha(1.0)
    version = tq.version
    tq.set_alpha(1.0)
    assert tq.version == version  # unchanged clip: caches stay valid
    tq.set_alpha(2.0)
    assert tq.version != version


def test_signed_full_grid_fills_the_integer_type():
    """The integer target's signed activations: the signed grid's step
    (bit for bit), one more level below, as INT8 / UINT8 with zero point
    128 store them."""
    full, narrow = Grid(4, 'signed_full'), Grid(4, 'signed')
    assert (full.qmin, full.qmax) == (-8, 7)
    assert full.step(1.3) == narrow.step(1.3)
    step = full.step(1.0)
    assert torch.equal(full.levels(1.0).float(),
                       torch.arange(-8, 8).double().mul(step).float())
    x = torch.tensor([-100.0, -7.6 * step, -7.4 * step, 0.49 * step, 100.0])
    assert torch.equal(full.to_codes(x, 1.0),
                       torch.tensor([-8.0, -8.0, -7.0, 0.0, 7.0]))
    assert torch.equal(narrow.to_codes(x, 1.0),
                       torch.tensor([-7.0, -7.0, -7.0, 0.0, 7.0]))
    assert torch.equal(full.quantize(x, 1.0),
                       full.from_codes(full.to_codes(x, 1.0), 1.0))
    assert Grid(8, 'signed_full').num_steps == 255
