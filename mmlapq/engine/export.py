"""Export a model of a config to ONNX (QDQ for a quantized checkpoint), and
check the result in onnxruntime against the PyTorch model on the config's
test set. What ``tools/export.py`` does after parsing its arguments."""
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


def ort_session(path: str, threads: Optional[int] = None):
    from ..export.runtimes import ort_session as session
    return session(path, threads)


@torch.no_grad()
def compare_with_onnxruntime(cfg, checkpoint: str, onnx_path: str,
                             num_images: Optional[int] = None,
                             batch_size: int = 500) -> Dict[str, float]:
    """Top-1 of the PyTorch model and of the ONNX model in onnxruntime on
    the test set, the share of images where their predictions agree, and
    the largest absolute logit difference. Predictions and top-1 are
    mmcls's: the argmax of the softmax scores (two logits a hair apart can
    have equal float32 scores; mmcls then takes the lower class)."""
    model = build_model(cfg, checkpoint)
    Accuracy = accuracy_metric()
    session = ort_session(onnx_path)
    static_batch = session.get_inputs()[0].shape[0]
    if isinstance(static_batch, int):  # exported for that batch only
        batch_size = static_batch
    agree, max_diff = 0, 0.0
    scores = dict(torch=[], onnxruntime=[])
    labels = []
    for images, batch_labels in preprocessed_test_set(cfg, model, num_images,
                                                      batch_size):
        labels.append(torch.from_numpy(batch_labels))
        ref = model(torch.from_numpy(images), mode='tensor')
        out = torch.from_numpy(session.run(None, {'input': images})[0])
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


def runtime_benchmark(cfg, models: Dict[str, str], out_dir: str,
                      checkpoint: Optional[str] = None,
                      batch_sizes=(1, 64), threads: int = 2,
                      rounds: int = 30, calib_images: int = 512,
                      test_images: Optional[int] = None,
                      openvino: bool = True, log=print) -> dict:
    """Latency and top-1 of the float model, onnxruntime's own int8
    (``quantize_static`` on the same FP32 ONNX, made here), and the exported
    ``models`` {label: ONNX path}, in onnxruntime and (when installed)
    OpenVINO, timed in turns in this process (see
    ``mmlapq.export.runtimes``)."""
    import os
    import os.path as osp

    from ..export import runtimes
    from .calibration import build_calibration_set
    for label, path in models.items():
        if not osp.isfile(path):
            raise LAPQError(f'{label}: ONNX file {path} does not exist: '
                            'write it with tools/export.py')
    checkpoint = checkpoint or cfg.get('load_from')
    if not checkpoint:
        raise LAPQError('no float checkpoint: pass --checkpoint or set '
                        'load_from in the config')
    os.makedirs(out_dir, exist_ok=True)
    fp32 = osp.join(out_dir, 'fp32.onnx')
    export_onnx(cfg, checkpoint, fp32)
    model = build_model(cfg, checkpoint)
    calib, _ = build_calibration_set(cfg, model, calib_images, 0, 64)
    calib_x = torch.cat(calib.inputs).numpy()
    log(f'onnxruntime quantize_static on {len(calib_x)} calibration images')
    ort_int8 = runtimes.ort_quantize_static(
        fp32, osp.join(out_dir, 'ort_int8.onnx'), calib_x)
    files = {'FP32': fp32, 'onnxruntime int8': ort_int8, **models}
    runners = {'onnxruntime': {k: runtimes.ort_runner(v, threads)
                               for k, v in files.items()}}
    if openvino and runtimes.openvino_available():
        ov_files = {'FP32': fp32}
        try:
            ov_files['NNCF int8'] = runtimes.nncf_quantize(
                fp32, osp.join(out_dir, 'nncf_int8.xml'), calib_x)
        except ImportError:
            log('NNCF is not installed: no NNCF int8 row')
        ov_files.update(models)
        runners['openvino'] = {k: runtimes.openvino_runner(v, threads)
                               for k, v in ov_files.items()}
    test = preprocessed_test_set(cfg, model, test_images)
    # The timed batches: the first test images (concatenated once).
    timing_images = np.ascontiguousarray(np.concatenate(
        [x for x, _ in test])[:max(batch_sizes)])
    rows = []
    reference = {'onnxruntime': 'onnxruntime int8', 'openvino': 'NNCF int8'}
    for runtime, group in runners.items():
        log(f'{runtime}: top-1 on {sum(len(y) for _, y in test)} images')
        accuracy = {k: runtimes.top1(run, test)['top1']
                    for k, run in group.items()}
        latency = {}
        for batch_size in batch_sizes:
            log(f'{runtime}: batch {batch_size}, {rounds} rounds in turns')
            latency[batch_size] = runtimes.interleaved_latency(
                group, timing_images[:batch_size], rounds)
        for label in group:
            row = dict(runtime=runtime, model=label, top1=accuracy[label])
            for batch_size, times in latency.items():
                ref = times.get(reference[runtime])
                row[f'b{batch_size}_ms'] = 1000 * times[label]['median_s']
                row[f'b{batch_size}_vs_fp32'] = times[label][
                    'ratio_to_first']
                row[f'b{batch_size}_vs_int8'] = None if ref is None else \
                    times[label]['median_s'] / ref['median_s']
            rows.append(row)
    if 'openvino' in runners:
        for label, path in files.items():
            if label in runners['openvino']:
                precisions = runtimes.openvino_int8_layers(path, threads)
                for row in rows:
                    if row['runtime'] == 'openvino' and row['model'] == label:
                        row['kernels'] = precisions
    return dict(rows=rows, threads=threads, rounds=rounds,
                batch_sizes=list(batch_sizes), calib_images=len(calib_x),
                test_images=sum(len(y) for _, y in test))
