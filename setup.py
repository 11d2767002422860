"""Installation of mmlapq, the LAPQ post-training quantization plugin for
mmcls and mmpretrain."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r"__version__ = '([^']+)'",
                    (HERE / 'mmlapq' / 'version.py').read_text()).group(1)

setup(
    name='mmlapq',
    version=VERSION,
    description='Loss Aware Post-training Quantization (LAPQ) for OpenMMLab '
    'classification models',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['mmlapq', 'mmlapq.*']),
    python_requires='>=3.8',
    # torch is pinned loosely on purpose: install the build you want (CPU or
    # CUDA) first, as OpenMMLab projects do; see README "Install".
    install_requires=[
        'torch>=1.13',
        'mmengine>=0.7.0,<1.0',
        'mmcv-lite>=2.0.0rc4,<2.1.0',
        'scipy>=1.7',
        'numpy',
        'matplotlib>=3.5',
        'setuptools<80',  # mmengine's `mmcls::` config lookup imports pkg_resources
    ],
    # The classification library: pip install -e .[mmcls] or .[mmpretrain]
    # (mmpretrain imports torchvision: install one that matches your torch
    # first; README "Quick start").
    extras_require={'mmcls': ['mmcls==1.0.0rc6'],
                    'mmpretrain': ['mmpretrain==1.2.0'],
                    'tests': ['pytest>=7']},
)
