"""The chain of an mmcls classifier for the objective's prefix cache."""
import logging

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


def test_other_models_fall_back_to_full_forwards_and_say_so(tmp_path,
                                                            caplog):
    model = build(toy_config(str(tmp_path)).model)
    logger = logging.getLogger('chain-test')
    with caplog.at_level(logging.INFO, logger='chain-test'):
        steps = build_chain(model, torch.randn(2, 3, 8, 8), logger)
    assert len(steps) == 1 and isinstance(steps[0], FullForward)
    assert 'runs the full forward' in caplog.text
