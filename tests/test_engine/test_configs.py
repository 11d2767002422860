"""The VGG, ResNet and MobileNetV2 configs: inherited model, LAPQ parts,
official checkpoint."""
import os.path as osp

import pytest
import yaml
from mmengine.config import Config

import mmlapq  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VGGS = ['vgg11', 'vgg13', 'vgg16', 'vgg19', 'vgg11bn', 'vgg13bn', 'vgg16bn',
        'vgg19bn']


# our config -> (mmcls config folder, stock config, metafile model name)
OTHERS = {
    'resnet18_w4a4': ('resnet', 'resnet18_8xb32_in1k', 'resnet18_8xb32_in1k'),
    'resnet50_w4a4': ('resnet', 'resnet50_8xb32_in1k', 'resnet50_8xb32_in1k'),
    'mobilenet-v2_w4a4': ('mobilenet_v2', 'mobilenet-v2_8xb32_in1k',
                          'mobilenet-v2_8xb32_in1k'),
}


def mmcls_config_dir(folder: str = 'vgg') -> str:
    import mmcls
    return osp.join(osp.dirname(mmcls.__file__), '.mim', 'configs', folder)


def mmcls_vgg_dir() -> str:
    return mmcls_config_dir('vgg')


def official_weights(folder: str = 'vgg') -> dict:
    """Checkpoint URLs as mmcls's own metafile lists them."""
    meta = osp.join(mmcls_config_dir(folder), 'metafile.yml')
    models = yaml.safe_load(open(meta))['Models']
    return {m['Name'].replace('_8xb32_in1k', '') if folder == 'vgg'
            else m['Name']: m['Weights'] for m in models}


def without_scope(node):
    if isinstance(node, dict):
        return {k: without_scope(v) for k, v in node.items()
                if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(without_scope(v) for v in node)
    return node


@pytest.mark.parametrize('name', VGGS)
def test_vgg_config(name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'lapq',
                                   f'{name}_w4a4.py'))
    stock = Config.fromfile(osp.join(mmcls_vgg_dir(),
                                     f'{name}_8xb32_in1k.py'))
    # Inheriting through `mmcls::` tags the dicts with their scope.
    assert cfg.model.get('_scope_') == 'mmcls'
    assert without_scope(cfg.model) == stock.model.to_dict()
    assert without_scope(cfg.test_dataloader) == \
        stock.test_dataloader.to_dict()
    assert cfg.load_from == official_weights()[name]
    assert cfg.load_from.startswith(
        'https://download.openmmlab.com/mmclassification/v0/vgg/')
    q = cfg.quantizer
    assert q.type == 'mmlapq.LAPQQuantizer'
    assert (q.w_bits, q.a_bits) == (4, 4)
    assert q.search.method == 'powell' and q.search.maxiter == 2
    assert q.calib.num_images == 512 and len(q.init.p_grid) == 10
    assert [h.type for h in cfg.lapq_hooks] == [
        'mmlapq.FP32EvalHook', 'mmlapq.CalibrationHook', 'mmlapq.LAPQHook',
        'mmlapq.LAPQReportHook']
    assert 'mmlapq' in cfg.custom_imports.imports


@pytest.mark.parametrize('name,bits', [('vgg16_w8a8', (8, 8)),
                                       ('vgg16_w4a8', (4, 8))])
def test_other_bit_widths(name, bits):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'lapq', f'{name}.py'))
    assert (cfg.quantizer.w_bits, cfg.quantizer.a_bits) == bits
    assert cfg.load_from == official_weights()['vgg16']


def test_quantizer_builds_from_every_config():
    from mmengine.registry import init_default_scope

    from mmlapq.registry import MODELS
    init_default_scope('mmcls')
    for name in VGGS:
        cfg = Config.fromfile(osp.join(REPO, 'configs', 'lapq',
                                       f'{name}_w4a4.py'))
        quantizer = MODELS.build(cfg.quantizer)
        assert quantizer.settings()['quant']['first_last'] == '8bit'


@pytest.mark.parametrize('name', sorted(OTHERS))
def test_resnet_and_mobilenet_configs(name):
    folder, stock_name, meta_name = OTHERS[name]
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'lapq', f'{name}.py'))
    stock = Config.fromfile(osp.join(mmcls_config_dir(folder),
                                     f'{stock_name}.py'))
    assert without_scope(cfg.model) == stock.model.to_dict()
    assert cfg.load_from == official_weights(folder)[meta_name]
    assert (cfg.quantizer.w_bits, cfg.quantizer.a_bits) == (4, 4)
    assert [h.type for h in cfg.lapq_hooks][-1] == 'mmlapq.LAPQReportHook'


@pytest.mark.parametrize('name, per_channel', [
    ('mobilenet-v2_w4a4', True), ('mobilenet-v2_fmnist_w4a4', True),
    ('resnet18_w4a4', False), ('resnet18_fmnist_w4a4', False),
    ('resnet50_w4a4', False)])
def test_mobilenet_and_resnet_configs_use_the_combination_measured_best(
        name, per_channel):
    """docs/reconstruction.md: QDrop with learned activation steps at the
    Lp init's clips, then the search over the activation clips, no
    equalization; per-channel weights on MobileNetV2."""
    from mmengine.registry import init_default_scope

    from mmlapq.benchmark.methods import METHOD_QUANT, METHODS
    from mmlapq.registry import MODELS
    init_default_scope('mmcls')
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'lapq', f'{name}.py'))
    settings = MODELS.build(cfg.quantizer).settings()
    assert settings['quant']['w_per_channel'] is per_channel
    assert settings['quant']['equalize'] is False
    assert settings['search']['variables'] == 'activations'
    rounding = settings['rounding']
    assert (rounding['method'], rounding['order']) == ('adaround',
                                                       'before_search')
    assert rounding['adaround']['drop_prob'] == 0.5
    assert rounding['adaround']['learn_act_steps'] is True
    # the benchmark row the docs name is the same combination
    init, search, row = METHODS['lapq_qdrop_lsq']
    assert (row['method'], row['order'], row['adaround']['drop_prob'],
            row['adaround']['learn_act_steps'], search['variables']) == (
                'adaround', 'before_search', 0.5, True, 'activations')
    assert METHOD_QUANT['lapq_qdrop_lsq'] == dict(equalize=False)


STAGES = ['mmlapq.FP32EvalHook', 'mmlapq.CalibrationHook', 'mmlapq.LAPQHook',
          'mmlapq.LAPQReportHook']


def _user_config(tmp_path, stock: str, extra: str = '') -> str:
    path = tmp_path / 'user.py'
    path.write_text(f"_base_ = ['mmcls::{stock}', "
                    f"'{REPO}/configs/_base_/lapq_w4a4.py']\n{extra}")
    return str(path)


def test_stages_join_the_hooks_of_a_stock_config(tmp_path):
    """RegNet's stock config has its own custom_hooks (an EMAHook and a
    PreciseBNHook): the
    one-line _base_ of README loads, the stages follow the config's own
    hooks, and the EMAHook, which would swap other weights in before every
    evaluation, is left out."""
    from mmlapq.engine.config import load_config
    regnet = 'regnet/regnetx-400mf_8xb128_in1k.py'
    cfg = load_config(_user_config(tmp_path, regnet))
    # Its PreciseBNHook acts after training epochs only: it stays.
    assert [h['type'] for h in cfg.custom_hooks] == ['PreciseBNHook',
                                                     *STAGES]
    # Hooks of the user's own stay, before the stages.
    config = _user_config(tmp_path, regnet,
                          "custom_hooks = [dict(type='EMAHook'), "
                          "dict(type='SyncBuffersHook')]\n")
    cfg = load_config(config)
    assert [h['type'] for h in cfg.custom_hooks] == ['SyncBuffersHook',
                                                     *STAGES]
    assert cfg.default_scope == 'mmcls'


def test_config_without_stages_fails_with_one_line(tmp_path):
    from mmlapq.engine import LAPQError
    from mmlapq.engine.config import load_config
    path = tmp_path / 'bare.py'
    path.write_text("_base_ = ['mmcls::vgg/vgg11_8xb32_in1k.py']\n"
                    "quantizer = dict(type='mmlapq.LAPQQuantizer')\n")
    with pytest.raises(LAPQError, match='lapq_hooks.*inherit configs/'):
        load_config(str(path))


@pytest.mark.parametrize('name', [
    'mobilenet-v2_fmnist_mixed_bops-w4a4', 'resnet18_fmnist_mixed_bops-w4a4',
    'vgg16_mixed_bops-w4a4', 'resnet50_mixed_bops-w4a4'])
def test_mixed_precision_configs(name):
    """Issue 29's configs: the uniform W4A4 config's model, checkpoint and
    settings, and mixed precision at the BOPs of W4A4."""
    from mmengine.registry import init_default_scope

    from mmlapq.registry import MODELS
    init_default_scope('mmcls')
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'lapq', f'{name}.py'))
    uniform = Config.fromfile(osp.join(
        REPO, 'configs', 'lapq', name.replace('_mixed_bops-w4a4', '_w4a4.py')))
    assert cfg.model == uniform.model and cfg.load_from == uniform.load_from
    quantizer = MODELS.build(cfg.quantizer)
    assert quantizer.mixed.kind == 'bops_of'
    assert quantizer.mixed.uniform == (4, 4)
    assert quantizer.mixed.w_candidates == (2, 3, 4, 8)
    assert quantizer.mixed.a_candidates == (4, 8)
    settings = quantizer.settings()
    assert settings.pop('mixed')['budget'] == dict(bops_of='w4a4')
    expected = MODELS.build(uniform.quantizer).settings()
    assert expected.pop('mixed') is None
    assert settings == expected
