"""mmcls and mmpretrain (engine/compat.py): the library a config runs on,
the twin configs of configs/mmpretrain/, and the same run on both."""
import importlib.util
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from inprocess import printed_top1, quantize_tool
from mmengine.structures import BaseDataElement

from mmlapq.engine import LAPQError
from mmlapq.engine import compat

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MMCLS_CONFIGS = osp.join(REPO, 'configs', 'lapq')
MMPRETRAIN_CONFIGS = osp.join(REPO, 'configs', 'mmpretrain')
IMAGENET = sorted(f[:-3] for f in os.listdir(MMCLS_CONFIGS)
                  if f.endswith('.py') and 'fmnist' not in f)


def test_library_follows_the_default_scope(monkeypatch):
    assert compat.library_of(Config(dict(default_scope='mmcls'))) == 'mmcls'
    assert compat.library_of(Config({})) == compat.installed_libraries()[0]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None
                        if name == 'mmpretrain' else real(name, *a))
    with pytest.raises(LAPQError, match=r'mmpretrain is not installed: pip '
                       r'install -e \.\[mmpretrain\]'):
        compat.library_of(Config(dict(default_scope='mmpretrain')))
    monkeypatch.setattr(importlib.util, 'find_spec', lambda *a: None)
    with pytest.raises(LAPQError, match='neither mmcls nor mmpretrain'):
        compat.library_of(Config({}))


def test_labels_of_either_kind_of_data_sample():
    """mmcls keeps the label in gt_label.label, mmpretrain in gt_label."""
    from mmcls.structures import ClsDataSample
    old = ClsDataSample().set_gt_label(3)
    new = BaseDataElement(gt_label=torch.tensor([5]))
    assert compat.gt_labels([old, new]).tolist() == [3, 5]


def test_mmpretrain_configs_are_twins_of_the_mmcls_ones():
    """Same files, same settings: each configs/mmpretrain/X.py says what
    configs/lapq/X.py says (read without either library: the text of the
    settings, with the scope's name swapped)."""
    assert sorted(os.listdir(MMPRETRAIN_CONFIGS)) == sorted(
        f for f in os.listdir(MMCLS_CONFIGS) if f.endswith('.py'))
    for name in IMAGENET:
        ours = open(osp.join(MMCLS_CONFIGS, f'{name}.py')).read()
        twin = open(osp.join(MMPRETRAIN_CONFIGS, f'{name}.py')).read()
        body = twin.split('\n', 2)[2]  # after the two-line header
        assert body == ours.replace('mmcls::', 'mmpretrain::').replace(
            'configs/lapq/', 'configs/mmpretrain/').replace(
                "mmcls's", "mmpretrain's"), name


# --- on mmpretrain (CI's second job) ----------------------------------------

def _mmpretrain_cfg(name: str) -> Config:
    return Config.fromfile(osp.join(MMPRETRAIN_CONFIGS, f'{name}.py'))


@pytest.mark.mmpretrain
@pytest.mark.parametrize('name', IMAGENET)
def test_imagenet_configs_build_under_mmpretrain(name, mmpretrain):
    """Each mmpretrain config inherits mmpretrain's stock model and builds
    it; an mmcls checkpoint of that model loads into it strictly."""
    from mmengine.registry import MODELS, init_default_scope
    cfg = _mmpretrain_cfg(name)
    mmcls_cfg = Config.fromfile(osp.join(MMCLS_CONFIGS, f'{name}.py'))
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.load_from == mmcls_cfg.load_from
    assert cfg.quantizer.to_dict() == mmcls_cfg.quantizer.to_dict()
    init_default_scope('mmcls')
    state = MODELS.build(mmcls_cfg.model).state_dict()
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    assert type(model).__module__.startswith('mmpretrain.')
    model.load_state_dict(state, strict=True)


@pytest.mark.mmpretrain
@pytest.mark.parametrize('name', ['vgg11bn_w4a4', 'resnet18_w4a4',
                                  'mobilenet-v2_w4a4'])
def test_mmcls_weights_give_the_same_logits_in_mmpretrain(name, mmpretrain):
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmcls')
    torch.manual_seed(0)
    ours = MODELS.build(Config.fromfile(
        osp.join(MMCLS_CONFIGS, f'{name}.py')).model).eval()
    init_default_scope('mmpretrain')
    twin = MODELS.build(_mmpretrain_cfg(name).model).eval()
    twin.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x, mode='tensor'), twin(x, mode='tensor'))


SLICE = ['--calib-images', '32', '--max-evals', '6', '--cfg-options',
         'quantizer.init.p_grid=[2.0,3.0,4.0]',
         'quantizer.calib.holdout_images=32',
         'test_dataloader.dataset.indices=300']


@pytest.mark.slow
@pytest.mark.mmpretrain
def test_demo_is_bit_identical_on_both_and_checkpoints_cross_over(
        tmp_path, capsys, fmnist_data, mmpretrain):
    """The Fashion-MNIST demo on a slice: the same clips, losses and top-1
    under mmcls and mmpretrain, and each run's quantized checkpoint
    evaluates to the same top-1 under the other library."""
    tool = quantize_tool()
    configs = dict(mmcls=osp.join(MMCLS_CONFIGS, 'vgg11bn_fmnist_w4a4.py'),
                   mmpretrain=osp.join(MMPRETRAIN_CONFIGS,
                                       'vgg11bn_fmnist_w4a4.py'))
    saved, reports = {}, {}
    for library, config in configs.items():
        work_dir = str(tmp_path / library)
        args = [config, '--work-dir', work_dir, *SLICE,
                f'experiment_name=demo_{library}']
        assert tool.main(args) == 0
        saved[library] = torch.load(osp.join(work_dir, 'lapq_quantized.pth'),
                                    weights_only=True)
        reports[library] = _report(work_dir)
        assert reports[library]['env']['library'] == library
    for key in ('quantized', 'fp32'):
        assert reports['mmcls'][key] == reports['mmpretrain'][key]
    assert reports['mmcls']['lapq']['calib_loss'] == \
        reports['mmpretrain']['lapq']['calib_loss']
    clips = [s['meta']['lapq']['clips'] for s in saved.values()]
    assert clips[0].keys() == clips[1].keys()
    for key in clips[0]:
        assert torch.equal(torch.as_tensor(clips[0][key]),
                           torch.as_tensor(clips[1][key])), key
    capsys.readouterr()
    for writer, reader in (('mmcls', 'mmpretrain'), ('mmpretrain', 'mmcls')):
        assert tool.main([configs[reader], '--eval-quantized',
                          str(tmp_path / writer / 'lapq_quantized.pth'),
                          '--work-dir', str(tmp_path / f'{writer}_in_'
                                            f'{reader}'),
                          '--cfg-options', 'test_dataloader.dataset.'
                          'indices=300', f'experiment_name=x_{reader}'
                          ]) == 0
        assert printed_top1(capsys.readouterr().out) == \
            reports[writer]['quantized']['top1']


def _report(work_dir: str) -> dict:
    import json
    return json.load(open(osp.join(work_dir, 'lapq_report.json')))
