"""Library forwards that bake the batch size into the exported graph, and
their batch-free forms, swapped in while tracing for export.

mmcls's and mmpretrain's ``ShiftWindowMSA.window_reverse`` (Swin) computes
the batch as ``int(windows.shape[0] / windows_per_image)``: the tracer
records that ``int`` as a constant, so the exported reshape takes the
example's batch only. The same reshape with ``-1`` for the batch computes
the same tensor at every batch size."""
from contextlib import contextmanager
from typing import Iterator, List

import torch
import torch.nn as nn


def window_reverse_any_batch(windows: torch.Tensor, H: int, W: int,
                             window_size: int) -> torch.Tensor:
    """``ShiftWindowMSA.window_reverse`` with the batch left to the
    reshape: windows (B * nW, ws, ws, C) -> (B, H, W, C)."""
    channels = windows.shape[-1]
    x = windows.view(-1, H // window_size, W // window_size, window_size,
                     window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, channels)


def _window_attentions(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules()
            if type(m).__name__ == 'ShiftWindowMSA'
            and callable(getattr(m, 'window_reverse', None))]


@contextmanager
def batch_free_reshapes(model: nn.Module) -> Iterator[int]:
    """Within the block, each Swin window attention of ``model`` reverses
    its windows with :func:`window_reverse_any_batch` (an instance
    attribute over the class's static method); yields how many were
    swapped, and restores them on exit."""
    swapped = _window_attentions(model)
    for module in swapped:
        module.window_reverse = window_reverse_any_batch
    try:
        yield len(swapped)
    finally:
        for module in swapped:
            del module.window_reverse
