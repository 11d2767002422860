"""Export a model of a config to ONNX (QDQ for a quantized checkpoint), and
check the result in onnxruntime against the PyTorch model on the config's
test set. What ``tools/export.py`` does after parsing its arguments; the
runtime benchmark (``mmlapq.benchmark.onnx_runtimes``) reads its models and
test set through the same functions."""
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from .checkpoint import check_checkpoint_exists, load_float_checkpoint
from .compat import accuracy_metric, gt_labels, init_scope
from .errors import LAPQError


def is_quantized_checkpoint(path: str) -> bool:
    from mmengine.runner import CheckpointLoader
    try:
        ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    except Exception:  # noqa: BLE001 - a float training checkpoint, say
        return False
    return isinstance(ckpt, dict) and bool(
        (ckpt.get('meta') or {}).get('lapq'))


def build_model(cfg, checkpoint: str) -> nn.Module:
    """The config's classifier (eval mode, CPU): rebuilt from a quantized
    checkpoint of mmlapq (in the memory format of the run that wrote it, so
    it computes what that run evaluated), or loaded strictly from a float
    one."""
    from mmengine.registry import MODELS

    from .quantized_checkpoint import load_quantized_checkpoint
    init_scope(cfg)
    check_checkpoint_exists(checkpoint, 'as CHECKPOINT')
    model_cfg = dict(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(model_cfg)
    if is_quantized_checkpoint(checkpoint):
        load_quantized_checkpoint(model, checkpoint)
    else:
        load_float_checkpoint(model, checkpoint)
    return model.eval()


def test_loader(cfg, batch_size: int, num_images: Optional[int] = None):
    """The config's test dataloader (first ``num_images`` images)."""
    import copy

    from mmengine.runner import Runner
    loader = copy.deepcopy(cfg.test_dataloader)
    loader.update(batch_size=batch_size, num_workers=0,
                  persistent_workers=False)
    if num_images is not None:
        loader['dataset']['indices'] = int(num_images)
    return Runner.build_dataloader(loader)


def export_onnx(cfg, checkpoint: str, out: str, opset: Optional[int] = None,
                batch_size: int = 1, weight_storage: str = 'int8') -> dict:
    """Write the model of ``checkpoint`` as ONNX to ``out``; the example
    input is a batch of the test set after the data preprocessor."""
    import os
    import os.path as osp

    from ..export import ExportError, export_qdq
    model = build_model(cfg, checkpoint).to(
        memory_format=torch.contiguous_format)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    batch = next(iter(test_loader(cfg, batch_size)))
    example = model.data_preprocessor(batch, False)['inputs']
    try:
        info = export_qdq(model, example, out, opset, weight_storage)
        if not _batch_independent(out, example):
            # The forward fixes the batch in its reshapes (Swin's window
            # partition): a dynamic batch axis would compute other batches
            # wrong, so the file takes the example's batch only.
            info = export_qdq(model, example, out, opset, weight_storage,
                              dynamic_batch=False)
    except ExportError as exc:
        raise LAPQError(f'cannot export {checkpoint}: {exc}') from None
    return info


def _batch_independent(path: str, example: torch.Tensor) -> bool:
    """Whether the exported graph gives the images of a batch twice as
    large the scores it gives them alone (a graph traced with the example's
    batch baked into a reshape mixes the images up, or fails). The second
    half is the example mirrored, so that a mix-up shows."""
    from ..export.onnxruntime import ort_session
    session = ort_session(path)
    x = example.cpu().numpy()
    y = np.ascontiguousarray(x[..., ::-1])
    alone = [session.run(None, {'input': v})[0] for v in (x, y)]
    try:
        both = session.run(None, {'input': np.concatenate([x, y])})[0]
    except Exception:  # noqa: BLE001 - a shape error of the runtime
        return False
    scale = max(float(np.abs(a).max()) for a in alone) + 1e-6
    return both.shape[0] == 2 * len(x) and all(
        float(np.abs(part - a).max()) <= 1e-3 * scale
        for part, a in zip((both[:len(x)], both[len(x):]), alone))


def compare_with_onnxruntime(cfg, checkpoint: str, onnx_path: str,
                             num_images: Optional[int] = None,
                             batch_size: int = 500) -> Dict[str, float]:
    """:func:`compare_with_runtime` in onnxruntime."""
    return compare_with_runtime(cfg, checkpoint, onnx_path, num_images,
                                batch_size, 'onnxruntime')


@torch.no_grad()
def compare_with_runtime(cfg, checkpoint: str, onnx_path: str,
                         num_images: Optional[int] = None,
                         batch_size: int = 500,
                         runtime: str = 'onnxruntime') -> Dict[str, float]:
    """Top-1 of the PyTorch model and of the ONNX model in ``runtime``
    ('onnxruntime' or 'openvino') on the test set, the share of images
    where their predictions agree, and the largest absolute logit
    difference. Predictions and top-1 are mmcls's: the argmax of the
    softmax scores (two logits a hair apart can have equal float32 scores;
    mmcls then takes the lower class)."""
    import onnx

    from ..export.onnxruntime import ort_runner
    from ..export.openvino import openvino_runner
    model = build_model(cfg, checkpoint)
    Accuracy = accuracy_metric()
    batch_dim = onnx.load(onnx_path).graph.input[0].type.tensor_type.shape \
        .dim[0]
    if batch_dim.HasField('dim_value'):  # exported for that batch only
        batch_size = batch_dim.dim_value
    run = ort_runner(onnx_path) if runtime == 'onnxruntime' \
        else openvino_runner(onnx_path)
    agree, max_diff = 0, 0.0
    scores = dict(torch=[], runtime=[])
    labels = []
    for images, batch_labels in preprocessed_test_set(cfg, model, num_images,
                                                      batch_size):
        labels.append(torch.from_numpy(batch_labels))
        ref = model(torch.from_numpy(images), mode='tensor')
        out = torch.from_numpy(np.asarray(run(images)))
        max_diff = max(max_diff, float((out - ref).abs().max()))
        ref, out = ref.softmax(1), out.softmax(1)
        agree += int((ref.argmax(1) == out.argmax(1)).sum())
        scores['torch'].append(ref)
        scores['runtime'].append(out)
    target = torch.cat(labels)
    top1 = {k: float(Accuracy.calculate(torch.cat(v), target,
                                        topk=(1, ))[0][0])
            for k, v in scores.items()}
    return dict(images=len(target), agreement=100.0 * agree / len(target),
                top1_torch=top1['torch'],
                **{f'top1_{runtime}': top1['runtime']},
                max_abs_logit_diff=max_diff)


def openvino_code_divergence(cfg, checkpoint: str, onnx_path: str,
                             num_images: int = 256,
                             batch_size: int = 32) -> Dict[str, object]:
    """Per activation quantizer of the exported model, the share of codes
    OpenVINO computes differently from onnxruntime on the first
    ``num_images`` test images, and the share of images whose predicted
    class they agree on (``export.divergence``): where the two runtimes'
    predictions part, and from which layer."""
    from ..export.divergence import runtime_divergence
    from ..export.openvino import openvino_available
    if not openvino_available():
        raise LAPQError('openvino is not installed: run tools/setup.sh (or '
                        'pip install openvino) for --divergence')
    import onnx
    model = build_model(cfg, checkpoint)
    first = onnx.load(onnx_path).graph.input[0].type.tensor_type.shape.dim[0]
    if first.HasField('dim_value'):  # exported for that batch only
        batch_size = first.dim_value
    batches = (x for x, _ in preprocessed_test_set(cfg, model, num_images,
                                                   batch_size))
    return runtime_divergence(onnx_path, batches)


def preprocessed_test_set(cfg, model: nn.Module,
                          num_images: Optional[int] = None,
                          batch_size: int = 500):
    """The config's test set after the model's data preprocessor, as
    (float32 NCHW images, int64 labels) numpy batches."""
    batches = []
    with torch.no_grad():
        for batch in test_loader(cfg, batch_size, num_images):
            data = model.data_preprocessor(batch, False)
            labels = gt_labels(data['data_samples'])
            batches.append((data['inputs'].numpy(), labels.numpy()))
    return batches
