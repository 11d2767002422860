"""Export a model of a config to ONNX (QDQ for a quantized checkpoint), and
check the result in onnxruntime against the PyTorch model on the config's
test set. What ``tools/export.py`` does after parsing its arguments."""
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from .checkpoint import check_checkpoint_exists, load_float_checkpoint
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
    from mmengine.registry import MODELS, init_default_scope

    from .quantized_checkpoint import load_quantized_checkpoint
    init_default_scope(cfg.get('default_scope', 'mmcls'))
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
        return export_qdq(model, example, out, opset, weight_storage)
    except ExportError as exc:
        raise LAPQError(f'cannot export {checkpoint}: {exc}') from None


def ort_session(path: str, threads: Optional[int] = None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings only
    return ort.InferenceSession(path, options,
                                providers=['CPUExecutionProvider'])


@torch.no_grad()
def compare_with_onnxruntime(cfg, checkpoint: str, onnx_path: str,
                             num_images: Optional[int] = None,
                             batch_size: int = 500) -> Dict[str, float]:
    """Top-1 of the PyTorch model and of the ONNX model in onnxruntime on
    the test set, the share of images where their predictions agree, and
    the largest absolute logit difference. Predictions and top-1 are
    mmcls's: the argmax of the softmax scores (two logits a hair apart can
    have equal float32 scores; mmcls then takes the lower class)."""
    from mmcls.evaluation import Accuracy
    model = build_model(cfg, checkpoint)
    session = ort_session(onnx_path)
    agree, max_diff = 0, 0.0
    scores = dict(torch=[], onnxruntime=[])
    labels = []
    for batch in test_loader(cfg, batch_size, num_images):
        data = model.data_preprocessor(batch, False)
        x = data['inputs']
        labels.append(torch.cat([s.gt_label.label
                                 for s in data['data_samples']]))
        ref = model(x, mode='tensor')
        out = torch.from_numpy(session.run(None, {'input': x.numpy()})[0])
        max_diff = max(max_diff, float((out - ref).abs().max()))
        ref, out = ref.softmax(1), out.softmax(1)
        agree += int((ref.argmax(1) == out.argmax(1)).sum())
        scores['torch'].append(ref)
        scores['onnxruntime'].append(out)
    target = torch.cat(labels)
    top1 = {k: float(Accuracy.calculate(torch.cat(v), target,
                                        topk=(1, ))[0][0])
            for k, v in scores.items()}
    return dict(images=len(target), agreement=100.0 * agree / len(target),
                top1_torch=top1['torch'],
                top1_onnxruntime=top1['onnxruntime'],
                max_abs_logit_diff=max_diff)


def ort_latency(path: str, batch: np.ndarray, threads: int,
                runs: int = 20, warmup: int = 3) -> Dict[str, float]:
    """Median and spread of onnxruntime's CPU seconds per batch."""
    session = ort_session(path, threads)
    for _ in range(warmup):
        session.run(None, {'input': batch})
    times: List[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {'input': batch})
        times.append(time.perf_counter() - t0)
    times.sort()
    return dict(median_s=times[len(times) // 2], min_s=times[0],
                max_s=times[-1], runs=runs, threads=threads,
                batch=int(batch.shape[0]))


def latency_table(cfg, paths: List[str], batch_size: int, threads: int,
                  runs: int) -> List[Dict[str, object]]:
    """Size and onnxruntime CPU latency per batch of each ONNX file, on
    one batch of the config's test set (the same batch for all)."""
    import os.path as osp

    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmcls'))
    model_cfg = dict(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    preprocessor = MODELS.build(model_cfg).data_preprocessor
    batch = next(iter(test_loader(cfg, batch_size)))
    x = preprocessor(batch, False)['inputs'].numpy()
    rows = []
    for path in paths:
        if not osp.isfile(path):
            raise LAPQError(f'ONNX file {path} does not exist: write it with '
                            'tools/export.py')
        rows.append(dict(file=path, mb=osp.getsize(path) / 1e6,
                         **ort_latency(path, x, threads, runs)))
    return rows
