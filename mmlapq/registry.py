"""Registries of mmlapq: children of mmengine's roots, scope ``mmlapq``.

Configs name our classes as ``type='mmlapq.X'`` and import the package with
``custom_imports = dict(imports=['mmlapq'])``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmlapq',
                  locations=['mmlapq.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmlapq',
                 locations=['mmlapq.engine'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='mmlapq',
                      locations=['mmlapq.datasets'])
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS,
                         scope='mmlapq', locations=['mmlapq.engine'])
