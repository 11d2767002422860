"""The calibration set from an mmcls config, built once as tensors.

Source: ``calib_dataloader`` of the config when given; otherwise the config's
training dataset with the test pipeline (no augmentation). Drawing from the
training split avoids the reference's leak (it calibrated on the validation
images it then reported accuracy on). The images are a seeded choice, cut into
batches; in a distributed run each rank takes every world_size-th batch, so
every batch holds the same images as in a single process and the summed loss
is the same (with fewer batches than processes the images are split
evenly instead, see ``rank_share``).
"""
import copy
import logging
from typing import List, Optional, Tuple

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


def rank_share(indices: np.ndarray, batch_size: int, rank: int,
               world_size: int) -> List[int]:
    """The images of ``rank``: every world_size-th batch of the seeded
    choice, so each batch holds the images it holds in one process. With
    fewer batches than processes, the images are split into world_size
    nearly equal parts instead (smaller batches; the summed loss is the
    same), so every process gets a share whenever there are at least as
    many images as processes."""
    if len(indices) < world_size:
        raise LAPQError(f'{len(indices)} calibration images cannot be shared '
                        f'by {world_size} processes: use at least '
                        f'{world_size} images (--calib-images) or fewer '
                        'processes')
    batches = [indices[i:i + batch_size]
               for i in range(0, len(indices), batch_size)]
    if len(batches) < world_size:
        return [int(i) for i in np.array_split(indices, world_size)[rank]]
    return [int(i) for b in batches[rank::world_size] for i in b]


def choose_holdout(dataset_len: int, calib_indices: np.ndarray,
                   num_images: int, seed: int) -> np.ndarray:
    """A second seeded draw (seed + 1), disjoint from the calibration
    images; fewer when the dataset has no more."""
    rest = np.setdiff1d(np.arange(dataset_len), calib_indices)
    count = min(num_images, len(rest))
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(rest, count, replace=False))


def _load(dataset, indices, batch_size: int, model: torch.nn.Module,
          num_workers: int) -> CalibrationSet:
    """The images ``indices`` of ``dataset``, preprocessed by the model's
    data preprocessor, in batches."""
    from mmengine.dataset import pseudo_collate

    from .data_checks import reading_data
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size,
                        shuffle=False, collate_fn=pseudo_collate,
                        num_workers=min(num_workers, 4))
    inputs, labels = [], []
    with torch.no_grad(), reading_data():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            inputs.append(data['inputs'])
            labels.append(torch.cat([s.gt_label.label for s in
                                     data['data_samples']]).to(
                                         data['inputs'].device))
    return CalibrationSet(inputs, labels)


def build_calibration_set(cfg, model: torch.nn.Module, num_images: int,
                          seed: int, batch_size: int,
                          logger: Optional[logging.Logger] = None,
                          rank: int = 0, world_size: int = 1,
                          holdout_images: int = 0
                          ) -> Tuple[CalibrationSet, dict]:
    """Preprocessed calibration tensors on the model's device (with
    ``holdout_images`` held-out images in ``.holdout``), and a record of
    where they came from."""
    from .data_checks import build_dataset
    dataset_cfg, loader_kwargs, source = calibration_dataset_cfg(cfg)
    dataset = build_dataset(dataset_cfg, 'calibration')
    indices = choose_indices(len(dataset), num_images, seed)
    mine = rank_share(indices, batch_size, rank, world_size)
    workers = loader_kwargs['num_workers']
    calib = _load(dataset, mine, batch_size, model, workers)
    record = dict(num_images=int(num_images), seed=int(seed), source=source,
                  batch_size=int(batch_size),
                  dataset=dataset_cfg.get('type', ''),
                  first_indices=[int(i) for i in indices[:8]],
                  holdout_images=0)
    held = choose_holdout(len(dataset), indices, holdout_images, seed) \
        if holdout_images else np.zeros(0, int)
    if len(held) >= world_size:
        calib.holdout = _load(dataset, rank_share(held, batch_size, rank,
                                                  world_size),
                              batch_size, model, workers)
        record['holdout_images'] = int(len(held))
    if logger:
        logger.info(f'calibration set: {num_images} images from the {source}'
                    f' (seed {seed}), {len(mine)} on this process, input '
                    f'shape {tuple(calib.inputs[0].shape[1:])}; held-out '
                    f"images for the search's guard: {len(held)}")
    return calib, record
