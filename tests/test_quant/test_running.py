"""What a wrapped model runs, read off its modules (quant/running.py):
known answers on a ResNet-18 whose residual blocks share their input
quantizer with their first convs, with float and switched-off layers."""
import torch.nn as nn
from test_residual import resnet18

from mmlapq.quant import QuantSettings, quantize_model
from mmlapq.quant.running import running_widths


def test_widths_are_read_off_the_model():
    model = resnet18()
    quantize_model(model, QuantSettings(
        w_bits=8, a_bits=8, first_last='fp', shortcut_bits=None, overrides={
            'layer2.0.conv1': dict(w_bits=3, a_bits=4),
            'layer3.0.conv2': dict(a_bits='fp')}))
    widths = running_widths(model)
    assert len(widths) == sum(isinstance(m, (nn.Conv2d, nn.Linear))
                              for m in model.modules())
    assert widths['conv1'] == (None, None)  # first layer, float
    # reads its block's quantizer (equal widths), yet counts 8 bits
    assert model.layer1[0].conv1.input_quantizer is None
    assert widths['layer1.0.conv1'] == (8, 8)
    # a block of 8- and 4-bit first convs: each at its own width
    assert widths['layer2.0.conv1'] == (3, 4)
    assert widths['layer2.0.downsample.0'] == (8, 8)
    assert widths['layer3.0.conv2'] == (8, None)
    assert widths['layer4.1.conv2'] == (None, None)  # last layer, float
    assert widths['layer4.0.conv2'] == (8, 8)
    model.layer4[0].conv2.quant_enabled = False
    assert running_widths(model)['layer4.0.conv2'] == (None, None)
