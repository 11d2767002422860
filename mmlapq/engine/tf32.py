"""TF32 on GPUs: one switch for every stage of a run."""
from contextlib import contextmanager

import torch


def tf32_flags() -> dict:
    """The TF32 switches in force (they go into the report)."""
    return dict(cuda_matmul=torch.backends.cuda.matmul.allow_tf32,
                cudnn=torch.backends.cudnn.allow_tf32)


@contextmanager
def tf32_mode(allow: bool):
    """Set both TF32 switches to ``allow`` inside the block (no-ops on a
    CPU). Every stage of a run goes through it, so the reported FP32 and
    quantized top-1 and the search use the same arithmetic; off by default,
    since Powell is sensitive to noise in the loss."""
    old = tf32_flags()
    torch.backends.cuda.matmul.allow_tf32 = bool(allow)
    torch.backends.cudnn.allow_tf32 = bool(allow)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old['cuda_matmul']
        torch.backends.cudnn.allow_tf32 = old['cudnn']
