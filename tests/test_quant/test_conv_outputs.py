"""Output quantizers of the convs whose outputs a float op reads
(quant/conv_outputs.py): which convs are found, what the wrapped model
then computes, and that a saved model rebuilds them."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmlapq.quant import QuantSettings, quantize_model, quantizers
from mmlapq.quant.conv_outputs import convs_read_in_float
from mmlapq.quant.wrap import conv_output_names


class ConvNeXtLike(nn.Module):
    """A conv into a channels-last LayerNorm (ConvNeXt's depthwise conv), a
    conv -> ReLU -> max pool read by a conv and by an add, a conv read by
    a conv only, and a conv read by the add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = x + self.conv3(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def example(n=4):
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))


SAME = dict(w_bits=4, a_bits=4, first_last='same', conv_output_bits=8)


def test_finds_the_convs_a_float_op_reads():
    torch.manual_seed(0)
    model = ConvNeXtLike().eval()
    quantize_model(model, QuantSettings(**dict(SAME, conv_output_bits=None)))
    # through the permute to the LayerNorm; through ReLU and max pool to
    # the add (conv2 reads it too, through its own quantizer); conv2 is
    # read by conv3 only
    assert convs_read_in_float(model, example()) == {
        'stem': 'layer_norm', 'conv1': 'add', 'conv3': 'add'}
    # the probe leaves the model as it was: quantizers need clips again
    assert all(not q.initialized for q in quantizers(model).values())


def test_output_quantizers_are_planned_and_put_the_output_on_the_grid():
    torch.manual_seed(0)
    model = ConvNeXtLike().eval()
    plans = quantize_model(model, QuantSettings(**SAME), example=example())
    added = {p.name: p for p in plans if p.type == 'ConvOutput'}
    assert set(added) == {'stem.output', 'conv1.output', 'conv3.output'}
    assert all(p.a_bits == 8 and p.w_bits is None for p in added.values())
    assert conv_output_names(plans) == ['stem', 'conv1', 'conv3']
    for name, q in quantizers(model).items():
        q.set_alpha(torch.full(q.alpha.shape, 0.5 if 'weight' in name
                               else 2.0))
    seen = {}
    model.stem.register_forward_hook(
        lambda m, i, out: seen.update(stem=out))
    model.conv2.register_forward_hook(
        lambda m, i, out: seen.update(conv2=out))
    with torch.no_grad():
        model(example())
    step = quantizers(model)['stem.output.input'].grid.step(2.0)
    codes = seen['stem'] / step
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert float(seen['stem'].abs().max()) <= 2.0 + 1e-6
    codes = seen['conv2'] / step
    assert not torch.allclose(codes, codes.round(), atol=1e-4)


def test_a_saved_plan_rebuilds_them_without_a_forward():
    torch.manual_seed(0)
    model = ConvNeXtLike().eval()
    plans = quantize_model(model, QuantSettings(**SAME), example=example())
    again = ConvNeXtLike().eval()
    quantize_model(again, QuantSettings(**SAME),
                   conv_outputs=conv_output_names(plans))
    assert list(quantizers(again)) == list(quantizers(model))


def test_convs_read_by_quantized_layers_only_get_none():
    """VGG-style: conv -> ReLU -> max pool -> conv -> ReLU -> flatten ->
    linear; no float op reads a conv's output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(8, 4)).eval()
    plans = quantize_model(model, QuantSettings(**SAME), example=example())
    assert not [p for p in plans if p.type == 'ConvOutput']


def test_with_unsigned_inputs_forced_an_output_is_still_signed():
    """a_signed=False makes layer inputs unsigned (ReLU outputs); a conv's
    output has no ReLU, so its quantizer keeps the negative values."""
    torch.manual_seed(0)
    model = ConvNeXtLike().eval()
    quantize_model(model, QuantSettings(**SAME, a_signed=False),
                   example=example())
    assert quantizers(model)['stem.output.input'].grid.kind == 'signed_full'
    assert quantizers(model)['conv1.input'].grid.kind == 'unsigned'


def test_the_probe_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
                          nn.Conv2d(8, 4, 1))
    quantize_model(model, QuantSettings(**SAME, fold_bn=False))
    model.train()
    before = model[1].running_mean.clone()
    assert convs_read_in_float(model, example()) == {'0': 'batch_norm'}
    assert model.training and torch.equal(model[1].running_mean, before)
