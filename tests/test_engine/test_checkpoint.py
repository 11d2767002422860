"""Strict float-checkpoint loading through mmengine, with one-line errors,
and the quantized checkpoint's save / rebuild."""
import argparse

import pytest
import torch
import torch.nn as nn

from mmlapq.engine import LAPQError
from mmlapq.engine.checkpoint import load_float_checkpoint


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_loads_exactly_and_strips_ddp_prefixes(tmp_path):
    src, dst = model(), nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    path = str(tmp_path / 'ddp.pth')
    torch.save({'state_dict': {f'module.{k}': v for k, v in
                               src.state_dict().items()}}, path)
    load_float_checkpoint(dst, path)
    assert torch.equal(dst[0].weight, src[0].weight)


@pytest.mark.parametrize('change, message', [
    (lambda s: s.pop('0.bias'), 'does not fit the model: 1 missing keys '
     '(e.g. 0.bias)'),
    (lambda s: s.update(extra=torch.zeros(1)), '1 unexpected keys (e.g. '
     'extra)'),
    (lambda s: s.update({'0.weight': torch.zeros(4, 3, 1, 1)}),
     '1 wrongly shaped keys (e.g. 0.weight)'),
])
def test_a_checkpoint_that_does_not_fit_is_one_line(
        tmp_path, change, message):
    state = model().state_dict()
    change(state)
    path = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': state}, path)
    with pytest.raises(LAPQError) as err:
        load_float_checkpoint(model(), path)
    assert message in str(err.value) and '\n' not in str(err.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(LAPQError, match='does not exist'):
        load_float_checkpoint(model(), str(tmp_path / 'none.pth'))
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(LAPQError, match='cannot read checkpoint'):
        load_float_checkpoint(model(), str(junk))


def test_a_training_checkpoint_with_pickled_objects_loads(tmp_path):
    """mmengine's training loop pickles objects that torch>=2.6 refuses
    with weights_only=True; the user's own file is unpickled in full."""
    src = model()
    path = str(tmp_path / 'epoch_1.pth')
    torch.save({'state_dict': src.state_dict(),
                'meta': {'args': argparse.Namespace(lr=0.1)}}, path)
    dst = model()
    nn.init.zeros_(dst[0].weight)
    load_float_checkpoint(dst, path)
    assert torch.equal(dst[0].weight, src[0].weight)
