"""The datasets of a run, built from the config with one-line errors: the
test set, and the calibration source (``calib_dataloader`` of the config,
else the training split with the test pipeline)."""
import copy
from typing import Tuple

from .errors import LAPQError


def calibration_dataset_cfg(cfg) -> Tuple[dict, dict, str]:
    """(dataset cfg, dataloader kwargs, description of the source)."""
    if cfg.get('calib_dataloader'):
        loader = copy.deepcopy(cfg.calib_dataloader)
        return (loader['dataset'], dict(num_workers=loader.get(
            'num_workers', 0)), 'calib_dataloader of the config')
    if not cfg.get('train_dataloader') or not cfg.get('test_dataloader'):
        raise LAPQError('the config has no calib_dataloader and no '
                        'train_dataloader/test_dataloader to derive it from: '
                        'add calib_dataloader = dict(dataset=...) to it')
    dataset = copy.deepcopy(cfg.train_dataloader['dataset'])
    test_pipeline = copy.deepcopy(cfg.test_dataloader['dataset']['pipeline'])
    if dataset.get('type') in ('RepeatDataset', 'ClassBalancedDataset',
                               'ConcatDataset'):
        raise LAPQError('the training dataset is a wrapper dataset: give '
                        'calib_dataloader = dict(dataset=...) in the config')
    dataset['pipeline'] = test_pipeline
    return (dataset, dict(num_workers=cfg.train_dataloader.get(
        'num_workers', 0)), 'training split with the test pipeline')


def describe(dataset_cfg: dict) -> str:
    keys = ('data_root', 'ann_file', 'data_prefix')
    parts = [f'{k}={dataset_cfg[k]!r}' for k in keys if dataset_cfg.get(k)]
    return ', '.join(parts) or repr(dataset_cfg.get('type'))


def build_dataset(dataset_cfg: dict, what: str):
    """Build one dataset of the config; any failure, or no image, is an
    LAPQError that names its data_root / ann_file."""
    from mmengine.registry import DATASETS
    where = describe(dataset_cfg)
    try:
        dataset = DATASETS.build(copy.deepcopy(dataset_cfg))
    except Exception as exc:  # noqa: BLE001 - each becomes one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if 'need at least one array to concatenate' in first:
            raise LAPQError(f'the {what} dataset ({where}) lists no images: '
                            'check its annotation file') from None
        raise LAPQError(f'cannot build the {what} dataset ({where}): {first}'
                        '; check data_root, ann_file and data_prefix in the '
                        'config') from None
    if len(dataset) == 0:
        raise LAPQError(f'the {what} dataset ({where}) has no images: check '
                        'data_root and ann_file in the config')
    return dataset
