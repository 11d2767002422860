"""Checkpoint reading that fails loudly, and the quantized checkpoint.

mmengine's runner loads ``load_from`` leniently (missing keys are a
warning). A quantized model built on the wrong weights is worthless, so
mmlapq reads the checkpoint itself and treats any missing or unexpected key
as an error.
"""
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict

import torch
import torch.nn as nn

from .errors import LAPQError

QUANTIZED_CHECKPOINT = 'lapq_quantized.pth'


def is_url(path: str) -> bool:
    return str(path).startswith(('http://', 'https://'))


def read_state_dict(path: str) -> 'OrderedDict[str, torch.Tensor]':
    """The float state dict of an mmcls checkpoint file or URL."""
    from mmengine.runner.checkpoint import CheckpointLoader
    if not is_url(path) and not osp.isfile(path):
        raise LAPQError(f'checkpoint {path} does not exist: pass an existing '
                        'file with --checkpoint PATH')
    try:
        try:
            ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        except Exception as exc:  # noqa: BLE001
            if is_url(path) or 'weights_only' not in str(exc).replace(
                    ' ', '_').lower():
                raise
            # A checkpoint written by mmengine's training loop pickles its
            # message hub and config objects, which torch>=2.6 refuses by
            # default. The user named this local file, so unpickle it as
            # mmcls's own tools did before torch 2.6.
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as exc:  # network, corrupt file, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if is_url(path):
            raise LAPQError(
                f'cannot download checkpoint {path} ({reason}): download it '
                f'by hand (e.g. wget {path}) and pass --checkpoint '
                f'{osp.basename(path)}') from None
        raise LAPQError(f'cannot read checkpoint {path} ({reason}): pass a '
                        'checkpoint saved by mmcls or torch.save') from None
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise LAPQError(f'checkpoint {path} holds no state dict: pass a '
                        'checkpoint saved by mmcls or torch.save')
    return OrderedDict((k[7:] if k.startswith('module.') else k, v)
                       for k, v in state.items())


def load_state_dict_strict(model: nn.Module, state: Dict[str, torch.Tensor],
                           source: str) -> None:
    """Load ``state`` into ``model``; any key mismatch is an LAPQError."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state
                   and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (('missing', missing), ('unexpected', unexpected),
                            ('wrongly shaped', wrong_shape)):
            if keys:
                parts.append(f'{len(keys)} {label} keys (e.g. {keys[0]})')
        raise LAPQError(f'checkpoint {source} does not fit the model: '
                        f'{", ".join(parts)}; pass the checkpoint trained '
                        'for this config\'s model')
    model.load_state_dict(state, strict=True)


def atomic_save(obj, path: str) -> None:
    """torch.save through a temporary file, so a crash never leaves half a
    checkpoint under the final name."""
    tmp = f'{path}.partial'
    torch.save(obj, tmp)
    os.replace(tmp, path)
