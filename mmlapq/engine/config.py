"""Reading an LAPQ config for the tools: one-line errors for a missing or
broken file, ``--cfg-options`` merged (parsed by mmengine's DictAction)."""
import os.path as osp
from typing import Optional

from mmengine.config import Config

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
    return cfg


def default_work_dir(cfg: Config, config_path: str) -> str:
    """work_dirs/<config name>, as mmengine's tools choose it."""
    return cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(config_path))[0])
