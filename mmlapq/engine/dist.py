"""Reductions across processes for distributed calibration (mmengine.dist).

Every rank holds a part of the calibration set. The loss is reduced as
(sum, count) so every rank sees the same value and Powell takes the same path
everywhere; histograms are gathered and merged in rank order so every rank
gets the same clips. With one process these are identities.
"""
import datetime
from contextlib import contextmanager

import torch
from mmengine import dist

from ..quant.histogram import AbsHistogram
from .errors import LAPQError


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


def broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's value of ``tensor`` on every process (a copy)."""
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.broadcast(tensor, src=0)
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any."""
    value = torch.tensor(int(bool(flag)))
    dist.all_reduce(value, op='max')
    return bool(value)


def init_distributed(cfg) -> None:
    """Start the process group before anything rank-local can fail, so that
    :func:`ranks_agree` can share a failure (the Runner then finds it
    started). On CPUs: gloo, and DDP without device ids."""
    import torch.distributed as torch_dist
    if cfg.launcher == 'none' or torch_dist.is_initialized():
        return
    dist_cfg = dict(cfg.env_cfg.get('dist_cfg', {}))
    if torch.cuda.is_available():
        dist.init_dist(cfg.launcher, **dist_cfg)
        return
    if cfg.launcher != 'pytorch':
        raise LAPQError(f'--launcher {cfg.launcher} needs GPUs; on CPUs run '
                        'with --launcher pytorch under torchrun')
    timeout = datetime.timedelta(seconds=dist_cfg.get('timeout', 1800))
    torch_dist.init_process_group(backend='gloo', timeout=timeout)
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel',
                                 device_ids=None, broadcast_buffers=False)


@contextmanager
def ranks_agree():
    """Run a rank-local stage (reading files, checking data) so that all
    processes stop together: after the block every rank learns whether any
    failed, and then every rank raises the same one-line LAPQError (the
    first failed rank's), before anyone reaches a collective that the failed
    rank would never join. With one process it is a plain block."""
    if not is_distributed():
        yield
        return
    failure, original = None, None
    try:
        yield
    except LAPQError as exc:
        failure = str(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: keep its traceback
        failure, original = f'{type(exc).__name__}: {exc}', exc
    failures = dist.all_gather_object(failure)
    failed = [(rank, text) for rank, text in enumerate(failures) if text]
    if not failed:
        return
    if original is not None:
        raise original
    rank, text = failed[0]
    raise LAPQError(f'{text} (on rank {rank} of {len(failures)})')
