"""Loading a float checkpoint strictly, with one-line errors.

mmengine's runner loads ``load_from`` leniently (missing keys are a
warning). A quantized model built on the wrong weights is worthless, so
mmlapq loads the checkpoint with mmengine's ``load_checkpoint(...,
strict=True)`` itself and turns its errors (no file, no download, keys or
shapes that do not fit) into LAPQErrors that say what to do.
"""
import os.path as osp
import re
from typing import Dict, List

import torch
import torch.nn as nn

from .errors import LAPQError

# DDP-saved checkpoints prefix every key with 'module.'.
REVISE_KEYS = [(r'^module\.', '')]


def is_url(path: str) -> bool:
    return str(path).startswith(('http://', 'https://'))


def check_checkpoint_exists(path: str,
                            how: str = 'with --checkpoint PATH') -> None:
    if not is_url(path) and not osp.isfile(path):
        raise LAPQError(f'checkpoint {path} does not exist: pass an existing '
                        f'file {how}')


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _mismatch(message: str) -> Dict[str, List[str]]:
    """Keys named by mmengine's (and torch's) strict-loading message."""
    found = dict(missing=[], unexpected=[], wrongly_shaped=[])
    for line in message.splitlines():
        for label, prefix in (('unexpected', 'unexpected key in source '
                               'state_dict: '),
                              ('missing', 'missing keys in source '
                               'state_dict: ')):
            if line.startswith(prefix):
                found[label] += line[len(prefix):].strip().split(', ')
        shape = re.match(r'\s*size mismatch for ([^:]+):', line)
        if shape:
            found['wrongly_shaped'].append(shape.group(1))
    return found


def fit_error(exc: BaseException, source: str):
    """The one-line error for a state dict that does not fit the model,
    or None when ``exc`` is something else."""
    found = _mismatch(str(exc))
    if not any(found.values()):
        return None
    parts = [f'{len(keys)} {label.replace("_", " ")} keys (e.g. {keys[0]})'
             for label, keys in found.items() if keys]
    return LAPQError(f'checkpoint {source} does not fit the model: '
                     f'{", ".join(parts)}; pass the checkpoint trained for '
                     "this config's model")


def load_float_checkpoint(model: nn.Module, path: str) -> None:
    """Load the float checkpoint ``path`` (file or URL) into ``model``;
    any missing, unexpected or wrongly shaped key is an LAPQError."""
    from mmengine.runner.checkpoint import (_load_checkpoint_to_model,
                                            load_checkpoint)
    check_checkpoint_exists(path)
    try:
        try:
            load_checkpoint(model, path, map_location='cpu', strict=True,
                            revise_keys=REVISE_KEYS)
        except Exception as exc:  # noqa: BLE001
            if is_url(path) or 'weights_only' not in str(exc).replace(
                    ' ', '_').lower():
                raise
            # A checkpoint written by mmengine's training loop pickles its
            # message hub and config objects, which torch>=2.6 refuses by
            # default. The user named this local file, so unpickle it as
            # mmcls's own tools did before torch 2.6.
            ckpt = torch.load(path, map_location='cpu', weights_only=False)
            _load_checkpoint_to_model(model, ckpt, strict=True,
                                      revise_keys=REVISE_KEYS)
    except Exception as exc:  # noqa: BLE001 - each becomes one line
        error = fit_error(exc, path)
        if error is not None:
            raise error from None
        if 'No state_dict found' in str(exc):
            raise LAPQError(f'checkpoint {path} holds no state dict: pass a '
                            'checkpoint saved by mmcls or torch.save') \
                from None
        if is_url(path):
            raise LAPQError(
                f'cannot download checkpoint {path} ({_first_line(exc)}): '
                f'download it by hand (e.g. wget {path}) and pass '
                f'--checkpoint {osp.basename(path)}') from None
        raise LAPQError(f'cannot read checkpoint {path} ({_first_line(exc)})'
                        ': pass a checkpoint saved by mmcls or torch.save') \
            from None


def load_state_dict_strict(model: nn.Module, state: Dict[str, torch.Tensor],
                           source: str) -> None:
    """Load ``state`` into ``model`` with mmengine's strict loading; any key
    mismatch is an LAPQError."""
    from mmengine.runner.checkpoint import load_state_dict
    try:
        load_state_dict(model, state, strict=True)
    except RuntimeError as exc:
        error = fit_error(exc, source)
        if error is None:
            raise
        raise error from None
