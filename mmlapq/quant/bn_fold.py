"""Fold BatchNorm into the convolution that precedes it.

After folding, conv(x) equals bn(conv(x)) of the float model in eval mode:
    scale = gamma / sqrt(running_var + eps)
    W' = W * scale (per output channel),  b' = (b - running_mean) * scale + beta
The BN module is replaced by nn.Identity, so deployments (and the quantizer)
see one conv with a bias, as integer kernels run it.
"""
from typing import List

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """Fold ``bn`` into ``conv`` in place (``conv`` gains a bias if needed):
    torch's own fusion arithmetic, written into the conv's parameters so
    that anything holding them (a wrapped model) sees the folded values."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError('cannot fold a BatchNorm without running statistics')
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
        bn.weight if bn.affine else None, bn.bias if bn.affine else None)
    conv.weight.copy_(weight)
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.detach().to(conv.weight.dtype))
    else:
        conv.bias.copy_(bias)


def _is_conv_module(module: nn.Module) -> bool:
    """mmcv's ConvModule (duck-typed so this package needs no mmcv)."""
    return all(hasattr(module, a) for a in ('conv', 'norm_name', 'with_norm',
                                            'order'))


def _numbered_pairs(module: nn.Module):
    """(conv, norm attribute name) pairs of the OpenMMLab naming convention:
    ``conv{i}`` followed by the norm whose name ``norm{i}_name`` holds
    (mmcls's ResNet stem and its BasicBlock / Bottleneck: conv1 -> bn1)."""
    for i in range(1, 10):
        conv = getattr(module, f'conv{i}', None)
        norm_name = getattr(module, f'norm{i}_name', None)
        if isinstance(conv, nn.Conv2d) and isinstance(norm_name, str) and \
                isinstance(getattr(module, norm_name, None), _BatchNorm):
            yield conv, norm_name


def fold_batch_norms(model: nn.Module) -> List[str]:
    """Fold every foldable BN of ``model`` in place; return the BN names.

    Handles mmcv ConvModule (conv then norm in its ``order``; MobileNetV2),
    the ``conv{i}`` / ``norm{i}_name`` pairs of mmcls's ResNet blocks and
    stem, and a Conv2d directly followed by any BatchNorm (BatchNorm2d,
    SyncBatchNorm, ...) among an nn.Sequential's children (VGG-BN's
    features, ResNet's downsample).
    """
    folded = []
    for name, module in list(model.named_modules()):
        prefix = f'{name}.' if name else ''
        for conv, norm_name in list(_numbered_pairs(module)):
            fold_bn_into_conv(conv, getattr(module, norm_name))
            setattr(module, norm_name, nn.Identity())
            folded.append(prefix + norm_name)
        if _is_conv_module(module) and module.with_norm:
            norm = getattr(module, module.norm_name)
            order = list(module.order)
            if isinstance(norm, _BatchNorm) and isinstance(
                    module.conv, nn.Conv2d) and order.index(
                        'conv') < order.index('norm'):
                fold_bn_into_conv(module.conv, norm)
                setattr(module, module.norm_name, nn.Identity())
                folded.append(prefix + module.norm_name)
        elif isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (_, first), (bn_name, second) in zip(children, children[1:]):
                if isinstance(first, nn.Conv2d) and isinstance(
                        second, _BatchNorm):
                    fold_bn_into_conv(first, second)
                    setattr(module, bn_name, nn.Identity())
                    folded.append(prefix + bn_name)
    return folded
