"""The calibration set: fixed, preprocessed tensors kept on the model's device.

Built once (the engine builds it from an mmcls dataset); every loss evaluation
then reads tensors only, with no decoding or augmentation.
"""
from dataclasses import dataclass
from typing import List, Optional

import torch


@dataclass
class CalibrationSet:
    inputs: List[torch.Tensor]  # batches of preprocessed images
    labels: List[torch.Tensor]  # matching batches of class indices
    # Other images of the same source that the search never optimises: the
    # held-out guard's (None: no guard).
    holdout: Optional['CalibrationSet'] = None

    @classmethod
    def from_tensors(cls, inputs: torch.Tensor, labels: torch.Tensor,
                     batch_size: int = 64) -> 'CalibrationSet':
        if len(inputs) != len(labels):
            raise ValueError(f'{len(inputs)} calibration inputs but '
                             f'{len(labels)} labels')
        if len(inputs) == 0:
            raise ValueError('the calibration set is empty')
        if batch_size < 1:
            raise ValueError(f'batch_size={batch_size} must be >= 1')
        return cls(list(inputs.split(batch_size)),
                   list(labels.long().split(batch_size)))

    @property
    def num_images(self) -> int:
        return sum(len(y) for y in self.labels)

    @property
    def device(self) -> torch.device:
        return self.inputs[0].device

    def to(self, device) -> 'CalibrationSet':
        return CalibrationSet([x.to(device) for x in self.inputs],
                              [y.to(device) for y in self.labels],
                              None if self.holdout is None
                              else self.holdout.to(device))

    def cat(self):
        return torch.cat(self.inputs), torch.cat(self.labels)
