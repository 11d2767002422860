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
import logging
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

from ..lapq.calib import CalibrationSet
from ..registry import DATA_SAMPLERS
from .data_checks import reading_data
from .compat import gt_labels
from .datasets import build_dataset, calibration_dataset_cfg
from .errors import LAPQError


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


@DATA_SAMPLERS.register_module()
class RankShareSampler(Sampler):
    """The images of this process among ``indices``: every world_size-th
    batch (see :func:`rank_share`), in order. For mmengine's
    ``Runner.build_dataloader(dict(sampler=dict(type=
    'mmlapq.RankShareSampler', indices=..., batch_size=...), ...))``."""

    def __init__(self, dataset, indices: Sequence[int], batch_size: int,
                 seed: Optional[int] = None, rank: Optional[int] = None,
                 world_size: Optional[int] = None):
        from mmengine.dist import get_dist_info
        own_rank, own_world = get_dist_info()
        self.indices = rank_share(
            np.asarray(indices), batch_size,
            own_rank if rank is None else rank,
            own_world if world_size is None else world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def preprocess_batches(loader, model: torch.nn.Module) -> CalibrationSet:
    """Every batch of ``loader`` through the model's data preprocessor:
    inputs and labels on the model's device."""
    inputs, labels = [], []
    with torch.no_grad(), reading_data():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            inputs.append(data['inputs'])
            labels.append(gt_labels(data['data_samples']).to(
                data['inputs'].device))
    return CalibrationSet(inputs, labels)


def _load(dataset, indices: np.ndarray, batch_size: int,
          model: torch.nn.Module, num_workers: int, rank: int,
          world_size: int) -> CalibrationSet:
    """This process's share of the images ``indices`` of ``dataset``,
    preprocessed, in batches."""
    from mmengine.runner import Runner
    loader = Runner.build_dataloader(dict(
        dataset=dataset, batch_size=batch_size,
        num_workers=min(num_workers, 4), persistent_workers=False,
        sampler=dict(type='mmlapq.RankShareSampler',
                     indices=[int(i) for i in indices],
                     batch_size=batch_size, rank=rank,
                     world_size=world_size),
        collate_fn=dict(type='pseudo_collate')))
    return preprocess_batches(loader, model)


def build_calibration_set(cfg, model: torch.nn.Module, num_images: int,
                          seed: int, batch_size: int,
                          logger: Optional[logging.Logger] = None,
                          rank: int = 0, world_size: int = 1,
                          holdout_images: int = 0, dataset=None
                          ) -> Tuple[CalibrationSet, dict]:
    """Preprocessed calibration tensors on the model's device (with
    ``holdout_images`` held-out images in ``.holdout``), and a record of
    where they came from. ``dataset``: the calibration dataset when already
    built (by the data checks)."""
    dataset_cfg, loader_kwargs, source = calibration_dataset_cfg(cfg)
    if dataset is None:
        dataset = build_dataset(dataset_cfg, 'calibration')
    indices = choose_indices(len(dataset), num_images, seed)
    workers = loader_kwargs['num_workers']
    calib = _load(dataset, indices, batch_size, model, workers, rank,
                  world_size)
    record = dict(num_images=int(num_images), seed=int(seed), source=source,
                  batch_size=int(batch_size),
                  dataset=dataset_cfg.get('type', ''),
                  first_indices=[int(i) for i in indices[:8]],
                  holdout_images=0)
    held = choose_holdout(len(dataset), indices, holdout_images, seed) \
        if holdout_images else np.zeros(0, int)
    if len(held) >= world_size:
        calib.holdout = _load(dataset, held, batch_size, model, workers,
                              rank, world_size)
        record['holdout_images'] = int(len(held))
    if logger:
        logger.info(f'calibration set: {num_images} images from the {source}'
                    f' (seed {seed}), {calib.num_images} on this process, '
                    f'input shape {tuple(calib.inputs[0].shape[1:])}; '
                    f"held-out images for the search's guard: {len(held)}")
    return calib, record
