"""Reading an LAPQ config for the tools: one-line errors for a missing or
broken file, ``--cfg-options`` merged (parsed by mmengine's DictAction), and
the LAPQ stages appended to the config's own hooks."""
import os.path as osp
from typing import List, Optional

from mmengine.config import Config
from mmengine.logging import print_log

from .compat import scope_of
from .errors import LAPQError


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """The config at ``path`` with ``cfg_options`` merged in; it must have a
    ``quantizer``."""
    if not osp.isfile(path):
        raise LAPQError(f'config {path} does not exist: pass the path of a '
                        'config file, e.g. configs/lapq/vgg16_w4a4.py')
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # noqa: BLE001 - syntax errors, bad _base_
        raise LAPQError(f'cannot read config {path} '
                        f'({str(exc).splitlines()[0]})') from None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'quantizer' not in cfg:
        raise LAPQError(f'config {path} has no `quantizer`: inherit '
                        'configs/_base_/lapq_w4a4.py')
    # A config without a scope (the Fashion-MNIST ones) runs on the
    # installed library; one naming a missing library fails here.
    cfg.default_scope = scope_of(cfg)
    attach_lapq_hooks(cfg)
    return cfg


# Hooks of training configs that change the weights a test evaluates: an
# EMAHook swaps its running average in before every test epoch. A quantized
# run evaluates the checkpoint it quantized (an EMA run's checkpoint already
# holds the averaged weights), so these go.
WEIGHT_SWAPPING_HOOKS = ('EMAHook', )


def _hook_type(hook) -> str:
    kind = hook.get('type', '')
    return kind if isinstance(kind, str) else getattr(kind, '__name__', '')


def attach_lapq_hooks(cfg: Config) -> List[str]:
    """Append the LAPQ stages (``cfg.lapq_hooks``) to the config's own
    ``custom_hooks``, less the weight-swapping ones, which are returned
    by type. A config that already lists mmlapq hooks in ``custom_hooks``
    keeps that list as it is."""
    own = list(cfg.get('custom_hooks') or [])
    if any(_hook_type(h).startswith('mmlapq.') for h in own):
        return []
    stages = cfg.get('lapq_hooks')
    if not stages:
        raise LAPQError('the config has no `lapq_hooks` (the LAPQ stages): '
                        'inherit configs/_base_/lapq_w4a4.py last in _base_')
    dropped = [_hook_type(h) for h in own
               if _hook_type(h).split('.')[-1] in WEIGHT_SWAPPING_HOOKS]
    if dropped:
        print_log(f'custom_hooks: {", ".join(dropped)} left out: it would '
                  'swap other weights in before the evaluations',
                  logger='current')
    cfg.custom_hooks = [h for h in own if _hook_type(h) not in dropped
                        ] + list(stages)
    return dropped


def default_work_dir(cfg: Config, config_path: str) -> str:
    """work_dirs/<config name>, as mmengine's tools choose it."""
    return cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(config_path))[0])
