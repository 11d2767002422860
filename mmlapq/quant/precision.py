"""Float precision that should not depend on the machine: TF32 switches and
the wide dtype of sums.

TF32: torch 2.9+ has per-backend ``fp32_precision`` switches ('ieee' or
'tf32'); once any of them is set, reading the legacy ``allow_tf32`` flags
can raise, so this module uses the new switches where they exist and the
legacy flags only on older torch.

Sums of many float32 terms (Hessians, losses, histogram moments) are kept in
float64 where the device has it: their rounding otherwise depends on the
kernel's summation order, which differs between CPUs and thread counts.
MPS has no float64: there they stay in float32 (and GPTQ's Cholesky runs on
the CPU), which :func:`wide_dtype` decides in one place.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, Union

import torch

# Device types without float64 kernels.
NO_FLOAT64 = {'mps'}


def wide_dtype(device: Union[torch.device, str, None]) -> torch.dtype:
    """float64 where ``device`` has it, else float32."""
    kind = torch.device(device).type if device is not None else 'cpu'
    return torch.float32 if kind in NO_FLOAT64 else torch.float64


def _new_api() -> bool:
    return hasattr(torch.backends.cuda.matmul, 'fp32_precision') and \
        hasattr(torch.backends.cudnn, 'conv')


def tf32_flags() -> Dict[str, bool]:
    """Whether TF32 is allowed for CUDA matmuls and cuDNN convolutions."""
    if _new_api():
        return dict(
            cuda_matmul=torch.backends.cuda.matmul.fp32_precision == 'tf32',
            cudnn=torch.backends.cudnn.conv.fp32_precision == 'tf32')
    return dict(cuda_matmul=torch.backends.cuda.matmul.allow_tf32,
                cudnn=torch.backends.cudnn.allow_tf32)


@contextmanager
def tf32_mode(allow: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 for CUDA matmuls and cuDNN convolutions
    inside the block; the switches are restored after it. No-op on CPUs."""
    if _new_api():
        switches = [torch.backends.cuda.matmul, torch.backends.cudnn.conv]
        old = [s.fp32_precision for s in switches]
        try:
            for s in switches:
                s.fp32_precision = 'tf32' if allow else 'ieee'
            yield
        finally:
            for s, value in zip(switches, old):
                s.fp32_precision = value
        return
    old = tf32_flags()
    try:
        torch.backends.cuda.matmul.allow_tf32 = bool(allow)
        torch.backends.cudnn.allow_tf32 = bool(allow)
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old['cuda_matmul']
        torch.backends.cudnn.allow_tf32 = old['cudnn']
