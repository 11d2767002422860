"""The Fashion-MNIST ResNet-18 and MobileNetV2 of issue 14: their LAPQ
configs build the trained model, and the committed checkpoints are small,
plain, documented and give their known top-1."""
import hashlib
import os.path as osp
import tempfile

import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# name -> (head inputs, top-1 of the float checkpoint on the first 1000
# test images, measured when it was committed)
MODELS = {
    'resnet18': (512, 92.40),
    'mobilenet-v2': (1280, 93.40),
}


def paths(name: str):
    return (osp.join(REPO, 'configs', 'fmnist', f'{name}_fmnist.py'),
            osp.join(REPO, 'configs', 'lapq', f'{name}_fmnist_w4a4.py'),
            osp.join(REPO, 'checkpoints', f'{name}_fmnist.pth'))


@pytest.mark.parametrize('name', MODELS)
def test_lapq_config_quantizes_the_trained_model(name):
    train_config, lapq_config, checkpoint = paths(name)
    train, lapq = Config.fromfile(train_config), Config.fromfile(lapq_config)
    assert lapq.model.to_dict() == train.model.to_dict()
    assert lapq.test_pipeline == train.test_pipeline
    assert lapq.load_from == osp.relpath(checkpoint, REPO)
    assert lapq.quantizer.w_bits == 4 and lapq.quantizer.a_bits == 4


@pytest.mark.parametrize('name', MODELS)
def test_committed_checkpoint_is_small_plain_and_documented(name):
    checkpoint = paths(name)[2]
    assert osp.getsize(checkpoint) <= 25 * 10**6  # issue 14's bound
    ckpt = torch.load(checkpoint, weights_only=True)  # tensors only
    weight = ckpt['state_dict']['head.fc.weight']
    assert weight.shape == (10, MODELS[name][0])
    assert weight.dtype == torch.float16
    digest = hashlib.sha256(open(checkpoint, 'rb').read()).hexdigest()
    assert digest in open(osp.join(REPO, 'README.md')).read()


@pytest.mark.parametrize('name', MODELS)
def test_checkpoint_gives_its_known_top1(name, fmnist_data):
    """Loads strictly into the LAPQ config's model and scores the first
    1000 test images: a config that drifted from the trained model (another
    stem, stride or head) fails to load or loses accuracy."""
    from mmengine.registry import init_default_scope

    import mmlapq  # noqa: F401 - registers GrayToRGB
    from mmlapq.engine import benchmark as bm
    cfg = Config.fromfile(paths(name)[1])
    init_default_scope('mmcls')
    with tempfile.TemporaryDirectory() as work_dir:
        runner = bm.build_runner(cfg, work_dir, cfg.load_from,
                                 test_images=1000)
        top1 = bm.accuracy(runner, bm.unwrap(runner.model), 'fp32')['top1']
    assert top1 == pytest.approx(MODELS[name][1], abs=0.05)
