"""The chain of an mmcls classifier for the objective's prefix cache."""
import logging

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from toy_runner import toy_config

import mmlapq  # noqa: F401
from mmlapq.engine.chain import build_chain, classifier_logits
from mmlapq.lapq.objective import FullForward

FMNIST_MODEL = 'configs/fmnist/vgg11bn_fmnist.py'


def build(model_cfg):
    init_default_scope('mmcls')
    torch.manual_seed(0)
    return MODELS.build(model_cfg).eval()


def test_vgg_steps_compose_to_its_forward():
    model = build(Config.fromfile(FMNIST_MODEL).model)
    x = torch.randn(2, 3, 32, 32)
    steps = build_chain(model, x)
    assert len(steps) == 15  # 8 convs, 5 pools of features, neck, head
    out = x
    with torch.no_grad():
        for step in steps:
            out = step(out)
        assert torch.allclose(out, classifier_logits(model, x), atol=1e-6)


@MODELS.register_module(force=True)
class ReusedReluBackbone(torch.nn.Module):
    """Calls one child twice: not a chain of its children."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return (self.relu(self.conv(self.relu(x))), )


def test_sequential_children_become_steps(tmp_path):
    model = build(toy_config(str(tmp_path)).model)
    x = torch.randn(2, 3, 8, 8)
    steps = build_chain(model, x)
    # the toy backbone's Sequential opened: conv, BN, ReLU, conv, ReLU
    assert [type(s).__name__ for s in steps] == [
        'Conv2d', 'BatchNorm2d', 'ReLU', 'Conv2d', 'ReLU', 'NeckStep',
        'HeadStep']


def test_other_models_fall_back_to_full_forwards_and_say_so(tmp_path,
                                                            caplog):
    model_cfg = toy_config(str(tmp_path)).model
    model_cfg.backbone = dict(type='ReusedReluBackbone')
    model = build(model_cfg)
    logger = logging.getLogger('chain-test')
    with caplog.at_level(logging.INFO, logger='chain-test'):
        steps = build_chain(model, torch.randn(2, 3, 8, 8), logger)
    assert len(steps) == 1 and isinstance(steps[0], FullForward)
    assert 'runs the full forward' in caplog.text


@pytest.mark.parametrize('config', ['resnet18_w4a4', 'mobilenet-v2_w4a4'])
def test_cached_loss_equals_the_full_forward_at_224(config):
    """The chain of a ResNet / MobileNetV2 (stem, blocks, last conv, neck,
    head) gives the loss of full forwards, at the init and after a clip in
    the middle moves (only the steps after it rerun)."""
    from mmlapq.lapq import CalibrationObjective, CalibrationSet
    from mmlapq.lapq.initialize import ClipInitializer, InitSettings
    from mmlapq.quant import QuantSettings, quantize_model
    cfg = Config.fromfile(f'configs/lapq/{config}.py')
    model = build(cfg.model)
    quantize_model(model, QuantSettings(w_bits=4, a_bits=4))
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 3, 224, 224, generator=g) for _ in range(2)]
    labels = [torch.randint(0, 1000, (2, ), generator=g) for _ in range(2)]
    calib = CalibrationSet(inputs, labels)
    steps = build_chain(model, inputs[0])
    assert len(steps) == {'resnet18_w4a4': 14, 'mobilenet-v2_w4a4': 21}[
        config]
    cached = CalibrationObjective(steps, calib, model=model)
    ClipInitializer(cached, InitSettings(method='max',
                                         mode='independent'))(None)
    full = CalibrationObjective([FullForward(model, classifier_logits)],
                                calib, model=model)
    assert cached.loss() == pytest.approx(full.loss(), rel=1e-6)
    names = [n for n in cached.quantizers if n.endswith('.input')]
    middle = cached.quantizers[names[len(names) // 2]]
    middle.set_alpha(middle.alpha * 0.5)
    assert cached.loss() == pytest.approx(full.loss(), rel=1e-6)
