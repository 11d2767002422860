"""mmlapq: Loss Aware Post-training Quantization (LAPQ) for mmcls models."""
from .version import __version__

# Importing the OpenMMLab side registers every class a config can name.
# quant/ and lapq/ stay importable without mmengine for pure-PyTorch use.
try:
    import mmengine  # noqa: F401
except ImportError:  # pragma: no cover - pure PyTorch use
    pass
else:
    from . import datasets, engine  # noqa: F401

__all__ = ['__version__']
