"""Backbones of the OpenMMLab zoo, built from the library's own stock
configs at a small input size with random weights: what a user's own model
looks like to mmlapq."""
import os
import os.path as osp
from typing import Dict, Optional

import torch

# name: stock config under the library's configs/; README "Quantize your
# own model" lists the same (all of them export to ONNX).
ZOO = {
    'efficientnet-b0': 'efficientnet/efficientnet-b0_8xb32_in1k.py',
    'mobilenet-v3-small': 'mobilenet_v3/mobilenet-v3-small_8xb128_in1k.py',
    'shufflenet-v2': 'shufflenet_v2/shufflenet-v2-1x_16xb64_in1k.py',
    'regnetx-400mf': 'regnet/regnetx-400mf_8xb128_in1k.py',
    'repvgg-a0': 'repvgg/repvgg-A0_8xb32_in1k.py',
    'resnext50': 'resnext/resnext50-32x4d_8xb32_in1k.py',
    'seresnet50': 'seresnet/seresnet50_8xb32_in1k.py',
    'densenet121': 'densenet/densenet121_4xb256_in1k.py',
    'convnext-t': 'convnext/convnext-tiny_32xb128_in1k.py',
    'deit-t': 'deit/deit-tiny_pt-4xb256_in1k.py',
    'swin-t': 'swin_transformer/swin-tiny_16xb64_in1k.py',
    'mobileone-s0': 'mobileone/mobileone-s0_8xb32_in1k.py',
}
SIZE = 64  # input pixels: small enough for a test, large enough for Swin


def library_config_dir(library: str = 'mmcls') -> str:
    import importlib
    return osp.join(osp.dirname(importlib.import_module(library).__file__),
                    '.mim', 'configs')


# What makes the transformers take SIZE x SIZE images.
SMALL_INPUT = {
    'deit-t': dict(backbone=dict(img_size=SIZE)),
    'swin-t': dict(backbone=dict(img_size=SIZE, pad_small_map=True)),
}


def write_user_config(path: str, name: str, data_root: str,
                      lapq_base: str) -> str:
    """The config a user writes for their own model: the stock config, our
    base, and a data pipeline at SIZE pixels."""
    stock = ZOO[name]
    text = f"""_base_ = ['mmcls::{stock}', '{lapq_base}']
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale={SIZE + SIZE // 8}, edge='short'),
    dict(type='CenterCrop', crop_size={SIZE}),
    dict(type='PackClsInputs'),
]
test_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root='{data_root}',
                                    pipeline=pipeline))
train_dataloader = dict(batch_size=4, num_workers=0,
                        persistent_workers=False,
                        dataset=dict(data_root='{data_root}',
                                     pipeline=pipeline))
"""
    with open(path, 'w') as f:
        f.write(text + (f'model = {SMALL_INPUT[name]!r}\n'
                        if name in SMALL_INPUT else ''))
    return path


def build_zoo_model(name: str, seed: int = 0) -> torch.nn.Module:
    """The stock model at SIZE pixels, random weights, random BN statistics
    (so that folding them is not the identity), eval mode."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmcls')
    cfg = Config.fromfile(osp.join(library_config_dir(), ZOO[name]))
    if name in SMALL_INPUT:
        cfg.merge_from_dict(dict(model=SMALL_INPUT[name]))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    randomize_norm_statistics(model)
    return model.eval()


def randomize_norm_statistics(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def informative_head(model: torch.nn.Module, probe: torch.Tensor) -> None:
    """Scale the classifier so its logits spread over a few units: mmcls
    initialises it at std 0.01, whose near-uniform scores leave top-1 and
    the loss blind to quantization."""
    with torch.no_grad():
        logits = model(probe, mode='tensor')
        scale = 3.0 / max(float(logits.std()), 1e-12)
        for module in model.head.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(scale)
                if module.bias is not None:
                    module.bias.mul_(scale)


def save_zoo_checkpoint(name: str, path: str) -> str:
    model = build_zoo_model(name)
    informative_head(model, torch.randn(8, 3, SIZE, SIZE))
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save(dict(meta=dict(mmcls_version='1.0.0rc6'),
                    state_dict=model.state_dict()), path)
    return path


def first_moved_conv_outputs(model, onnx_path: str, images
                             ) -> Dict[int, Optional[dict]]:
    """For each image whose top-1 differs between PyTorch and onnxruntime:
    where onnxruntime first computed other codes than PyTorch at a conv
    output quantizer (quant/conv_outputs.py), in forward order: that
    conv, how many of its codes differ, the largest difference in steps,
    and how far from a rounding tie (half a step) PyTorch's value was at
    each differing code, at most; None when no conv output's code moved
    in that image.

    Why: PyTorch computes a conv in float and rounds its output; the
    runtime's QLinearConv accumulates integers and requantizes with one
    float multiply. The two agree except where the value lies within float
    error of a tie; one such code then moves the layers after it, and a
    random-weight model at 4 bits can amplify it into another top-1. An
    export bug moves codes away from ties."""
    import numpy as np
    import onnx

    from mmlapq.export.divergence import onnxruntime_outputs, with_outputs
    from mmlapq.export.onnx_qdq import _qdq_chain_to
    from mmlapq.export.onnxruntime import module_of_node
    from mmlapq.quant.conv_outputs import output_quantizer_module
    seen = {}  # conv name -> (PyTorch's value in steps, its code, step)
    hooks = []
    for name, module in model.named_modules():
        output = output_quantizer_module(module)
        if output is None:
            continue
        quantizer = output.input_quantizer
        step = float(quantizer.dequantize(torch.ones(1)) -
                     quantizer.dequantize(torch.zeros(1)))

        def keep(_, inputs, out, name=name, step=step):
            # copies: an in-place ReLU after the quantizer would change them
            seen[name] = (inputs[0].numpy().copy() / step,
                          out.numpy().copy() / step, step)
        hooks.append(output.register_forward_hook(keep))
    with torch.no_grad():
        logits = model(torch.from_numpy(images), mode='tensor').numpy()
    for hook in hooks:
        hook.remove()
    # Each conv's output quantizer: the QuantizeLinear -> [Clip] ->
    # DequantizeLinear that reads the Conv node of that module.
    graph = onnx.load(onnx_path).graph
    producers = {o: n for n in graph.node for o in n.output}
    tensors = {}
    for node in graph.node:
        chain = _qdq_chain_to(node, producers)
        conv = chain and producers.get(chain[0].input[0])
        if conv and conv.op_type == 'Conv' and \
                module_of_node(conv.name) in seen:
            tensors[module_of_node(conv.name)] = node.output[0]
    assert set(tensors) == set(seen), set(seen) - set(tensors)
    path = with_outputs(onnx_path, list(tensors.values()),
                        onnx_path + '.codes.onnx')
    runtime = onnxruntime_outputs(path)(images)
    scores = runtime[graph.output[0].name]
    first_moved = {}  # image -> where its codes first moved
    for name, (value, codes, step) in seen.items():  # forward order
        theirs = runtime[tensors[name]] / step
        assert theirs.shape == codes.shape, name
        steps = np.round(np.abs(theirs - codes))
        tie = np.abs(value - np.floor(value) - 0.5)
        for image in np.flatnonzero(steps.reshape(len(steps), -1).any(1)):
            if image not in first_moved:
                moved = steps[image] > 0
                first_moved[image] = dict(
                    conv=name, codes=int(moved.sum()),
                    max_steps=float(steps[image].max()),
                    max_tie_distance=float(tie[image][moved].max()))
    return {int(image): first_moved.get(image) for image in
            np.flatnonzero(scores.argmax(1) != logits.argmax(1))}
