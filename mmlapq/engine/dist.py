"""Reductions across processes for distributed calibration (mmengine.dist).

Every rank holds a part of the calibration set. The loss is reduced as
(sum, count) so every rank sees the same value and Powell takes the same path
everywhere; histograms are gathered and merged in rank order so every rank
gets the same clips. With one process these are identities.
"""
import torch
from mmengine import dist

from ..quant.histogram import AbsHistogram


def is_distributed() -> bool:
    return dist.get_world_size() > 1


def reduce_loss_sum(total: torch.Tensor, count: int):
    if not is_distributed():
        return total, count
    packed = torch.stack([total.double().reshape(()),
                          torch.tensor(float(count), dtype=torch.float64,
                                       device=total.device)])
    dist.all_reduce(packed, op='sum')
    return packed[0], int(round(float(packed[1])))


def reduce_histogram(hist: AbsHistogram) -> AbsHistogram:
    if not is_distributed():
        return hist
    states = dist.all_gather_object(hist.state())
    merged = AbsHistogram(hist.num_bins)
    for state in states:
        merged.merge_(AbsHistogram.from_state(state))
    return merged


def reduce_tensor_sum(tensor: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op='sum')
    return tensor
