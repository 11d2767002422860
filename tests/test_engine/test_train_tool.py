"""tools/train.py on the library-neutral Fashion-MNIST config: two short
epochs, under mmcls and (CI's second job) under mmpretrain."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SHORT = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
         'train_dataloader.dataset.indices=256',
         'val_dataloader.dataset.indices=256',
         'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False',
         'val_dataloader.persistent_workers=False',
         # the schedule's cosine cycles, fitted into the two epochs
         'param_scheduler.1.end=2', 'param_scheduler.1.periods=[1]',
         'param_scheduler.1.restart_weights=[1.0]']


def _train(tmp_path, library: str) -> str:
    work_dir = str(tmp_path / library)
    proc = subprocess.run(
        [sys.executable, 'tools/train.py',
         'configs/fmnist/vgg11bn_fmnist.py', '--work-dir', work_dir,
         '--cfg-options', f'default_scope={library}', *SHORT],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Epoch(val) [2]' in proc.stdout + proc.stderr
    state = torch.load(osp.join(work_dir, 'epoch_2.pth'),
                       weights_only=False)['state_dict']
    assert state['head.fc.weight'].shape == (10, 512)
    return work_dir


@pytest.mark.slow
def test_train_tool_on_mmcls(tmp_path, fmnist_data):
    _train(tmp_path, 'mmcls')


@pytest.mark.slow
@pytest.mark.mmpretrain
def test_train_tool_on_mmpretrain(tmp_path, fmnist_data, mmpretrain):
    _train(tmp_path, 'mmpretrain')
