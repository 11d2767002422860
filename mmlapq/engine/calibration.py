"""The calibration set from an mmcls config, built once as tensors.

Source: ``calib_dataloader`` of the config when given; otherwise the config's
training dataset with the test pipeline (no augmentation). Drawing from the
training split avoids the reference's leak (it calibrated on the validation
images it then reported accuracy on). The images are a seeded choice, cut into
batches; in a distributed run each rank takes every world_size-th batch, so
every batch holds the same images as in a single process and the summed loss
is the same.
"""
import copy
import logging
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..lapq.calib import CalibrationSet
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


def choose_indices(dataset_len: int, num_images: int, seed: int) -> np.ndarray:
    if num_images < 1:
        raise LAPQError(f'calib.num_images={num_images}: use at least 1')
    if num_images > dataset_len:
        raise LAPQError(
            f'{num_images} calibration images were asked for but the '
            f'calibration dataset holds {dataset_len}: lower --calib-images '
            '(quantizer.calib.num_images) or use a larger dataset')
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(dataset_len, num_images, replace=False))


def build_calibration_set(cfg, model: torch.nn.Module, num_images: int,
                          seed: int, batch_size: int,
                          logger: Optional[logging.Logger] = None,
                          rank: int = 0, world_size: int = 1
                          ) -> Tuple[CalibrationSet, dict]:
    """Preprocessed calibration tensors on the model's device, and a record
    of where they came from."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS
    dataset_cfg, loader_kwargs, source = calibration_dataset_cfg(cfg)
    try:
        dataset = DATASETS.build(dataset_cfg)
    except (FileNotFoundError, RuntimeError, AssertionError) as exc:
        raise LAPQError(f'cannot build the calibration dataset '
                        f'({str(exc).splitlines()[0]}): check data_root and '
                        'ann_file of the dataset in the config') from None
    if len(dataset) == 0:
        raise LAPQError(f'the calibration dataset ({source}) has no images: '
                        'check data_root and ann_file in the config')
    indices = choose_indices(len(dataset), num_images, seed)
    batches = [indices[i:i + batch_size]
               for i in range(0, len(indices), batch_size)]
    mine = [int(i) for b in batches[rank::world_size] for i in b]
    if not mine:
        raise LAPQError(f'{num_images} calibration images make '
                        f'{len(batches)} batches, fewer than the '
                        f'{world_size} processes: use more images or a '
                        'smaller quantizer.calib.batch_size')
    loader = DataLoader(Subset(dataset, mine), batch_size=batch_size,
                        shuffle=False, collate_fn=pseudo_collate,
                        num_workers=min(loader_kwargs['num_workers'], 4))
    inputs, labels = [], []
    preprocessor = model.data_preprocessor
    with torch.no_grad():
        for batch in loader:
            data = preprocessor(batch, False)
            inputs.append(data['inputs'])
            labels.append(torch.cat([s.gt_label.label for s in
                                     data['data_samples']]).to(
                                         data['inputs'].device))
    if logger:
        logger.info(f'calibration set: {num_images} images from the {source}'
                    f' (seed {seed}), {len(mine)} on this process, input '
                    f'shape {tuple(inputs[0].shape[1:])}')
    record = dict(num_images=int(num_images), seed=int(seed), source=source,
                  batch_size=int(batch_size),
                  dataset=dataset_cfg.get('type', ''),
                  first_indices=[int(i) for i in indices[:8]])
    return CalibrationSet(inputs, labels), record
