"""mmcls or mmpretrain: which OpenMMLab classification library a run uses.

mmpretrain is mmcls renamed (2023): the same models, checkpoints and
metrics under another scope, with two differences this package meets:
the data samples' ``gt_label`` is a plain tensor instead of a LabelData
(``gt_label.label``), and the packing transform is ``PackInputs`` instead
of ``PackClsInputs`` (``mmlapq.PackInputs`` packs for either). The config's
``default_scope`` picks the library; a config without one gets the
installed library (mmcls first where both are).
"""
import importlib
import importlib.util
from typing import List, Optional, Sequence

import torch

from ..registry import TRANSFORMS
from .errors import LAPQError

LIBRARIES = ('mmcls', 'mmpretrain')


def installed_libraries() -> List[str]:
    return [name for name in LIBRARIES
            if importlib.util.find_spec(name) is not None]


def _check_installed(name: str) -> str:
    if importlib.util.find_spec(name) is None:
        raise LAPQError(f'the config is an {name} config (default_scope '
                        f"'{name}') but {name} is not installed: "
                        f'pip install -e .[{name}], or use a config of '
                        'the library you have')
    return name


def library_of(cfg=None) -> str:
    """The classification library of ``cfg`` (its ``default_scope``), else
    the installed one."""
    scope = cfg.get('default_scope') if cfg is not None else None
    if scope in LIBRARIES:
        return _check_installed(scope)
    installed = installed_libraries()
    if not installed:
        raise LAPQError('neither mmcls nor mmpretrain is installed: pip '
                        'install -e .[mmcls] or -e .[mmpretrain]')
    return installed[0]


def scope_of(cfg) -> str:
    """The registry scope a run of ``cfg`` starts in."""
    scope = cfg.get('default_scope')
    return scope if scope and scope not in LIBRARIES else library_of(cfg)


def init_scope(cfg) -> str:
    """Start the registries in the scope of ``cfg`` and write it into
    ``cfg.default_scope`` (where a Runner built from ``cfg`` reads it: a
    config without one would run in mmengine's scope); returns it."""
    from mmengine.registry import init_default_scope
    scope = scope_of(cfg)
    cfg.default_scope = scope
    init_default_scope(scope)
    return scope


def current_library() -> str:
    """The library of the scope mmengine runs in now, else the installed
    one."""
    from mmengine.registry import DefaultScope
    current = DefaultScope.get_current_instance()
    if current is not None and current.scope_name in LIBRARIES:
        return current.scope_name
    return library_of()


def library_version(name: str) -> str:
    return importlib.import_module(name).__version__


def gt_labels(samples: Sequence) -> torch.Tensor:
    """The ground-truth labels of a batch of data samples, one per sample
    (mmcls: ``gt_label.label``; mmpretrain: ``gt_label``)."""
    labels = []
    for sample in samples:
        label = sample.gt_label
        labels.append(getattr(label, 'label', label).reshape(-1))
    return torch.cat(labels)


def accuracy_metric(library: Optional[str] = None):
    """The library's Accuracy metric class."""
    module = importlib.import_module(
        f'{library or current_library()}.evaluation')
    return module.Accuracy


# The library's packing transform, by the name it has there.
_PACK_TRANSFORM = dict(mmcls='PackClsInputs', mmpretrain='PackInputs')


@TRANSFORMS.register_module()
class PackInputs:
    """``PackClsInputs`` under mmcls, ``PackInputs`` under mmpretrain (the
    library of the scope the dataset is built in): one data pipeline for
    configs that run on either."""

    def __init__(self, **kwargs):
        from mmengine.registry import TRANSFORMS as ROOT
        library = current_library()
        importlib.import_module(f'{library}.datasets')  # registers it
        self.pack = ROOT.build(dict(
            type=f'{library}.{_PACK_TRANSFORM[library]}', **kwargs))

    def __call__(self, results: dict) -> dict:
        return self.pack(results)

    def __repr__(self) -> str:
        return f'mmlapq.PackInputs({self.pack!r})'
