"""The chain of an mmcls classifier, for the objective's prefix cache.

mmcls's VGG runs its ``features`` modules one after another (by
``range_sub_modules``), then (ImageNet variant) flattens into its
``classifier``. Other backbones are walked by the order in which a probe
forward calls their direct children, each child called once and fed the
previous one's output; an ``nn.Sequential`` child (ResNet's ``layer1..4``,
MobileNetV2's ``layer1..7``) is opened into its blocks, each a step. The
neck and head follow. So a ResNet's steps are its stem modules, each
residual block, neck and head; a MobileNetV2's its first conv, each
inverted-residual block, the last conv, neck and head. A vision
transformer's steps are its embedding (patch embedding, cls token and
position embedding, run by the backbone itself up to its first layer),
each encoder layer, and the final norm with the head.

The chain is checked against the model's own forward on a calibration batch;
any other model (or a mismatch) gets the one-step full forward, which is
correct but uncached, and the log says so.
"""
import logging
from typing import List, Optional

import torch
import torch.nn as nn

from .objective import FullForward
from ..quant.control import quantization_disabled


class NeckStep(nn.Module):
    """An mmcls neck on the single feature map the head will use."""

    def __init__(self, neck: nn.Module):
        super().__init__()
        self.neck = neck

    def forward(self, x):
        out = self.neck((x, ))
        return out[-1] if isinstance(out, (tuple, list)) else out


class HeadStep(nn.Module):
    """An mmcls classification head: features -> logits."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x):
        return self.head((x, ))


def classifier_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of an mmcls ImageClassifier on preprocessed inputs."""
    return model(x, mode='tensor')


def _vgg_steps(backbone: nn.Module) -> Optional[List[nn.Module]]:
    if not all(hasattr(backbone, a) for a in ('range_sub_modules',
                                              'module_name', 'out_indices',
                                              'num_classes')):
        return None
    features = getattr(backbone, backbone.module_name)
    num_classes = backbone.num_classes
    last_stage = len(backbone.range_sub_modules) - 1 if num_classes > 0 \
        else max(backbone.out_indices)
    steps = [features[j] for i in range(last_stage + 1)
             for j in range(*backbone.range_sub_modules[i])]
    if num_classes > 0:
        steps.append(nn.Flatten())  # a copy when x is channels-last
        steps.extend(backbone.classifier.children())
    return steps


class _ReachedLayer(Exception):
    """Raised by a hook at the first encoder layer, carrying its input."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x = x


class ViTEmbedStep(nn.Module):
    """A vision transformer's forward up to its first encoder layer (patch
    embedding, cls token, position embedding, dropout, pre-norm), run by
    the backbone's own forward and stopped at the first layer's input: no
    copy of the library's code. Only the patch embedding is a child (the
    step's quantized layers); the backbone is held as a plain reference."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.patch_embed = backbone.patch_embed
        self.__dict__['backbone'] = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.backbone.layers[0]

        def stop(module, args):
            raise _ReachedLayer(args[0])

        handle = first.register_forward_pre_hook(stop)
        try:
            self.backbone(x)
        except _ReachedLayer as reached:
            return reached.x
        finally:
            handle.remove()
        raise RuntimeError('the backbone never called its first layer')


class ViTHeadStep(nn.Module):
    """After a vision transformer's last encoder layer: the final norm,
    the output the head reads (mmpretrain's ``_format_output``, or mmcls's
    [patch token map, cls token]) and the head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        if backbone.final_norm:
            self.final_norm = backbone.ln1
        if getattr(backbone, 'avg_token', False) or \
                getattr(backbone, 'out_type', None) == 'avg_featmap':
            self.token_norm = backbone.ln2
        self.head = head
        self.__dict__['backbone'] = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        if b.final_norm:
            x = self.final_norm(x)
        if hasattr(b, '_format_output'):  # mmpretrain
            out = b._format_output(x, b.patch_resolution)
        else:
            out = self._mmcls_output(x)
        return self.head((out, ))

    def _mmcls_output(self, x: torch.Tensor):
        b = self.backbone
        B, _, C = x.shape
        tokens = x[:, 1:] if b.with_cls_token else x
        patch_token = tokens.reshape(B, *b.patch_resolution, C).permute(
            0, 3, 1, 2)
        cls_token = x[:, 0] if b.with_cls_token else None
        if b.avg_token:
            patch_token = self.token_norm(patch_token.permute(
                0, 2, 3, 1).reshape(B, -1, C).mean(dim=1))
        return [patch_token, cls_token] if b.output_cls_token else \
            patch_token


def _vit_steps(model: nn.Module) -> Optional[List[nn.Module]]:
    """A vision transformer (mmcls's / mmpretrain's VisionTransformer and
    its kin): the embedding, each encoder layer, and the rest with the
    head; None for another backbone or one whose last layer is not its
    output."""
    backbone = model.backbone
    if not all(hasattr(backbone, a) for a in (
            'patch_embed', 'layers', 'pos_embed', 'final_norm',
            'patch_resolution', 'out_indices')) or \
            getattr(model, 'with_neck', False) or \
            not getattr(model, 'with_head', False):
        return None
    layers = list(backbone.layers)
    if not layers or len(layers) - 1 not in [
            i % len(layers) for i in backbone.out_indices]:
        return None
    return [ViTEmbedStep(backbone)] + layers + [
        ViTHeadStep(backbone, model.head)]


def _called_children_steps(backbone: nn.Module, probe: torch.Tensor
                           ) -> Optional[List[nn.Module]]:
    """The backbone's direct children in the order a forward calls them
    (Sequential ones opened into their children); None when a child is
    called more than once or the backbone calls none."""
    calls: List[nn.Module] = []
    handles = [child.register_forward_hook(
        lambda module, inputs, output: calls.append(module))
        for child in backbone.children()]
    try:
        with torch.no_grad():
            backbone(probe)
    finally:
        for handle in handles:
            handle.remove()
    if not calls or len(set(map(id, calls))) != len(calls):
        return None
    steps: List[nn.Module] = []
    for module in calls:
        plain_sequential = isinstance(module, nn.Sequential) and \
            type(module).forward is nn.Sequential.forward
        steps.extend(module.children() if plain_sequential else [module])
    return steps


def build_chain(model: nn.Module, probe: torch.Tensor,
                logger: Optional[logging.Logger] = None) -> List[nn.Module]:
    """Steps whose composition equals ``model``'s logits (checked on
    ``probe``); ``[FullForward]`` when the model is not a known chain."""
    full = [FullForward(model, classifier_logits)]
    backbone = getattr(model, 'backbone', None)
    steps = _vgg_steps(backbone) if backbone is not None else None
    with_head = False  # the steps end with the head already
    if steps is None and backbone is not None:
        steps = _vit_steps(model)
        with_head = steps is not None
    if steps is None and backbone is not None:
        try:
            with quantization_disabled(model):
                model.eval()
                steps = _called_children_steps(backbone, probe)
        except Exception:  # noqa: BLE001 - any failure means "not a chain"
            steps = None
    if steps is None:
        if logger:
            logger.info('model is not a known chain: every loss evaluation '
                        'runs the full forward')
        return full
    if getattr(model, 'with_neck', False) and not with_head:
        steps.append(NeckStep(model.neck))
    if getattr(model, 'with_head', False) and not with_head:
        steps.append(HeadStep(model.head))
    try:
        with torch.no_grad(), quantization_disabled(model):
            model.eval()
            x = probe
            for step in steps:
                x = step(x)
            ok = torch.allclose(x, classifier_logits(model, probe), rtol=1e-5,
                                atol=1e-5)
    except Exception:  # noqa: BLE001 - any failure means "not a chain"
        ok = False
    if not ok:
        if logger:
            logger.warning('the chain of this model does not reproduce its '
                           'forward: falling back to full forward passes')
        return full
    return steps
