"""The benchmark's methods (benchmark/methods.py) run the recipe their
names say on every config: a method built on the ResNet-18 and MobileNetV2
configs (which learn the activation steps) or the VGG one (GPTQ) has each
reconstruction switch its name fixes, and a method that does not
reconstruct carries none of the config's reconstruction settings."""
import os.path as osp

import pytest

import mmlapq  # noqa: F401
from mmlapq.benchmark.methods import METHODS, make_quantizer
from mmlapq.engine.config import load_config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = ['resnet18_fmnist_w4a4', 'mobilenet-v2_fmnist_w4a4',
           'vgg11bn_fmnist_w4a4']

# method -> (QDrop's drop probability, learned steps, Fisher, equalized)
RECONSTRUCTING = {
    'adaround': (0.0, False, False, False),
    'qdrop': (0.5, False, False, False),
    'lapq_qdrop': (0.5, False, False, False),
    'lapq_qdrop_lsq': (0.5, True, False, False),
    'lapq_qdrop_lsq_fisher': (0.5, True, True, False),
    'lapq_cle_qdrop': (0.5, False, False, True),
    'lapq_cle_qdrop_between': (0.5, False, False, True),
}


def config_of(name):
    return load_config(osp.join(REPO, 'configs', 'lapq', f'{name}.py'))


@pytest.mark.parametrize('config', CONFIGS)
def test_reconstructing_methods_fix_their_switches(config):
    cfg = config_of(config)
    for method, (drop, lsq, fisher, equalized) in RECONSTRUCTING.items():
        quantizer = make_quantizer(cfg.quantizer, method, 4, 4)
        settings = quantizer.rounding.adaround_settings
        assert quantizer.rounding.method == 'adaround'
        assert (settings.drop_prob, settings.learn_act_steps,
                settings.fisher) == (drop, lsq, fisher), method
        assert bool(quantizer.quant.equalize) == equalized, method
    # lapq_qdrop and lapq_qdrop_lsq differ on every config
    qdrop, lsq = (make_quantizer(cfg.quantizer, m, 4, 4).rounding
                  for m in ('lapq_qdrop', 'lapq_qdrop_lsq'))
    assert qdrop.adaround_settings != lsq.adaround_settings


@pytest.mark.parametrize('config', CONFIGS)
def test_each_method_has_the_settings_it_names(config):
    cfg = config_of(config)
    for method, (init, search, rounding) in METHODS.items():
        quantizer = make_quantizer(cfg.quantizer, method, 3, 3)
        got = quantizer.rounding
        assert (quantizer.quant.w_bits, quantizer.quant.a_bits) == (3, 3)
        if rounding.get('method'):
            assert got.method == rounding['method'], method
        for key, value in search.items():
            assert getattr(quantizer.search, key) == value, (method, key)
        for key, value in init.items():
            assert getattr(quantizer.init, key) == value, (method, key)
        if method not in RECONSTRUCTING and \
                method not in ('config', 'lapq_mixed'):
            # no reconstruction: none of the config's settings of it
            assert got.adaround == {}, method
            assert got.ignored() == [], method
    # the config's own recipe is the config's
    own = make_quantizer(cfg.quantizer, 'config', 4, 4).rounding
    assert own.method == cfg.quantizer.rounding.method
