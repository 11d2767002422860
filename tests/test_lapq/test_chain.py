"""The chain of an mmcls classifier for the objective's prefix cache."""
import logging

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from toy_runner import toy_config

import mmlapq  # noqa: F401
from mmlapq.lapq.chain import build_chain, classifier_logits
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


def fixed_codes(model, seed=0):
    """Integer codes on every quantized weight (nearest rounding moved by
    -1, 0 or +1 at random, kept on the grid), as GPTQ leaves them."""
    from mmlapq.quant import quant_layers
    from mmlapq.quant.int_weights import code_range, layer_weight_codes
    g = torch.Generator().manual_seed(seed)
    for layer in quant_layers(model).values():
        if getattr(layer, 'weight_quantizer', None) is None:
            continue
        codes = layer_weight_codes(layer)
        low, high = code_range(layer.weight_quantizer.grid)
        moved = codes + torch.randint(-1, 2, codes.shape, generator=g)
        layer.set_weight_codes(moved.clamp(low, high).float())


def random_imagenet_model(config: str, size: int = 64):
    """The random ImageNet model of ``configs/lapq/{config}.py``, two
    batches of two random images and labels, with the BN statistics of
    these images and large logits: a random MobileNetV2's features
    otherwise vanish (logits equal to 1e-10) and a loss would not notice a
    wrong cache."""
    model = build(Config.fromfile(f'configs/lapq/{config}.py').model)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(2, 3, size, size, generator=g) for _ in range(2)]
    labels = [torch.randint(0, 1000, (2, ), generator=g) for _ in range(2)]
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()
        model(torch.cat(inputs), mode='tensor')
        model.eval()
        model.head.fc.weight.mul_(100)
    return model, inputs, labels


@pytest.mark.parametrize('config', ['resnet18_w4a4', 'mobilenet-v2_w4a4'])
def test_cached_loss_equals_the_full_forward(config):
    """The chain of a ResNet / MobileNetV2 (stem, blocks, last conv, neck,
    head) gives the loss of full forwards: at the init, and after weight
    and activation clips move one after another down the chain, with
    integer codes on the weights (a weight clip rescales them). After the
    first move every evaluation reads a cached step input (fewer steps
    run than the whole chain) and still equals the full forward."""
    from mmlapq.lapq import CalibrationObjective, CalibrationSet
    from mmlapq.lapq.initialize import ClipInitializer, InitSettings
    from mmlapq.quant import QuantSettings, quantize_model
    model, inputs, labels = random_imagenet_model(config)
    quantize_model(model, QuantSettings(w_bits=4, a_bits=4))
    calib = CalibrationSet(inputs, labels)
    steps = build_chain(model, inputs[0])
    assert len(steps) == {'resnet18_w4a4': 14, 'mobilenet-v2_w4a4': 21}[
        config]
    cached = CalibrationObjective(steps, calib, model=model)
    ClipInitializer(cached, InitSettings(method='max',
                                         mode='independent'))(None)
    fixed_codes(model)

    def full_loss():
        """Full forwards of a copy with every cache cleared: shares no
        state with the chain's objective."""
        import copy
        fresh = copy.deepcopy(model)
        for m in fresh.modules():
            if hasattr(m, '_cache_key'):
                m._cache_key = None
        return CalibrationObjective(
            [FullForward(fresh, classifier_logits)], calib, model=fresh,
            cache_bytes=0).loss()

    assert cached.loss() == pytest.approx(full_loss(), rel=1e-6)
    # Clips of steps a quarter, half and three quarters down the chain,
    # moved in chain order: weight, input, weight, input, ...
    by_step = sorted(cached.quantizers, key=cached.quantizer_step.get)
    n = len(by_step)
    moves = [by_step[i] for i in (n // 4, n // 4 + 1, n // 2, n // 2 + 1,
                                  3 * n // 4, 3 * n // 4 + 1)]
    # ... then back up the chain: the entries stored below are stale.
    moves += [by_step[n // 4 + 1], by_step[3 * n // 4]]
    assert {m.rsplit('.', 1)[1] for m in moves} == {'weight', 'input'}
    full_steps = len(steps) * len(inputs)
    for i, name in enumerate(moves):
        q = cached.quantizers[name]
        q.set_alpha(q.alpha * 0.6)
        before = cached.steps_run
        assert cached.loss() == pytest.approx(full_loss(), rel=1e-6), name
        if 0 < i < 6:  # read from the entry the previous move stored
            assert cached.steps_run - before < full_steps, name


@pytest.mark.parametrize('config, blocks', [
    # VGG-11-BN: five stages (ConvModules up to their max pool), then the
    # neck and the head
    ('configs/fmnist/vgg11bn_fmnist.py',
     [(0, 2), (2, 4), (4, 7), (7, 10), (10, 13), (13, 15)]),
    # ResNet-18: the stem up to its max pool, eight blocks, neck + head
    ('configs/lapq/resnet18_w4a4.py',
     [(0, 4)] + [(i, i + 1) for i in range(4, 12)] + [(12, 14)]),
])
def test_reconstruction_blocks_of_mmcls_models(config, blocks):
    from mmlapq.lapq.reconstruction import reconstruction_blocks
    from mmlapq.quant import QuantSettings, quantize_model
    model = build(Config.fromfile(config).model)
    quantize_model(model, QuantSettings())
    steps = build_chain(model, torch.randn(2, 3, 32, 32))
    assert reconstruction_blocks(steps) == blocks


def test_a_vision_transformer_is_a_chain_of_its_layers():
    """mmcls's VisionTransformer: the embedding, each encoder layer, the
    final norm with the head; the cached loss equals full forwards at the
    init and after clips of later layers change, and the layers' quantizers
    (their attention products' too) belong to their layer's step."""
    from test_quant.test_attention import vit, with_clips
    from mmlapq.lapq import CalibrationObjective, CalibrationSet
    from mmlapq.quant import QuantSettings, quantize_model
    model = vit()
    quantize_model(model, QuantSettings(w_bits=4, a_bits=4))
    x = with_clips(model)
    calib = CalibrationSet([x[:2], x[2:]], [torch.tensor([1, 2]),
                                            torch.tensor([3, 4])])
    steps = build_chain(model, x[:2])
    assert [type(s).__name__ for s in steps] == [
        'ViTEmbedStep', 'TransformerEncoderLayer', 'TransformerEncoderLayer',
        'ViTHeadStep']
    cached = CalibrationObjective(steps, calib, model=model)
    full = CalibrationObjective([FullForward(model, classifier_logits)],
                                calib, model=model, cache_bytes=0)
    assert [len(layers) for layers in cached.step_layers] == [1, 8, 8, 1]
    assert cached.loss() == pytest.approx(full.loss(), rel=1e-6)
    for name in ('backbone.layers.1.attn.k_act.input',
                 'backbone.layers.1.ffn.layers.1.input'):
        q = cached.quantizers[name]
        q.set_alpha(q.alpha * 0.5)
        assert cached.loss() == pytest.approx(full.loss(), rel=1e-6)
    assert cached.steps_run < len(steps) * 2 * cached.num_evals
