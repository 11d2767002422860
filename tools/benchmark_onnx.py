"""Latency and top-1 of exported models next to the float model and the
runtimes' own int8 quantizers, timed in turns in one process.

    python tools/benchmark_onnx.py CONFIG LABEL=FILE.onnx [LABEL=FILE ...]
        [--checkpoint FLOAT.pth] [--batch-sizes 1 64] [--threads 2]
        [--rounds 30] [--calib-images 512] [--test-images N]
        [--no-openvino] [--ort-dynamic] [--transformer] [--out DIR]

Exports the config's float model (load_from, or --checkpoint) to ONNX, makes
onnxruntime's own int8 model of it (quantize_static: MinMax, per-channel INT8
weights, UINT8 activations, 512 calibration images of the train split,
seed 0; with --ort-dynamic also its dynamic int8 model), then times every
model at each batch size in turns (FP32, int8,
yours, FP32, ...) and measures top-1 on the test set. With OpenVINO
installed, the same again in OpenVINO, with NNCF's int8 model when NNCF is
installed, and the precisions of the kernels OpenVINO runs. Prints a
markdown table; writes DIR/benchmark_onnx.json and .md (default
work_dirs/benchmark_onnx/<config name>).
"""
import argparse
import json
import os.path as osp
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('models', nargs='+', metavar='LABEL=FILE',
                   help='exported models, e.g. w4a4=work_dirs/x/'
                   'lapq_quantized.onnx')
    p.add_argument('--checkpoint', help='float checkpoint (default: '
                   'load_from of the config)')
    p.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 64])
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--rounds', type=int, default=30)
    p.add_argument('--calib-images', type=int, default=512)
    p.add_argument('--test-images', type=int, help='first N test images '
                   'for top-1 (default all)')
    p.add_argument('--no-openvino', action='store_true')
    p.add_argument('--ort-dynamic', action='store_true',
                   help="also onnxruntime's dynamic int8 quantization (what "
                   'it recommends for transformers)')
    p.add_argument('--transformer', action='store_true',
                   help="also onnxruntime's static int8 with SmoothQuant and "
                   "NNCF's transformer preset (ModelType.TRANSFORMER)")
    p.add_argument('--out', help='output folder')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None) -> int:
    import mmlapq  # noqa: F401
    from mmlapq.engine import LAPQError
    from mmlapq.engine.config import load_config
    from mmlapq.benchmark.onnx_runtimes import runtime_benchmark
    from mmlapq.fileio import atomic_write
    from mmlapq.report.runtime_table import runtime_markdown
    args = parse_args(argv)
    models = {}
    for item in args.models:
        label, sep, path = item.partition('=')
        if not sep or not label or not path:
            print(f'error: {item!r} is not LABEL=FILE.onnx: name each '
                  'model, e.g. w4a4=work_dirs/x/lapq_quantized.onnx',
                  file=sys.stderr)
            return 2
        models[label] = path
    name = osp.splitext(osp.basename(args.config))[0]
    out = args.out or osp.join('work_dirs', 'benchmark_onnx', name)
    try:
        cfg = load_config(args.config, args.cfg_options)
        result = runtime_benchmark(
            cfg, models, out, args.checkpoint, args.batch_sizes,
            args.threads, args.rounds, args.calib_images, args.test_images,
            openvino=not args.no_openvino, ort_dynamic=args.ort_dynamic,
            transformer=args.transformer,
            log=lambda m: print(m, file=sys.stderr))
    except LAPQError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    table = runtime_markdown(result)
    print(table)
    for ext, text in (('md', table + '\n'),
                      ('json', json.dumps(result, indent=1))):
        atomic_write(osp.join(out, f'benchmark_onnx.{ext}'),
                     lambda tmp, text=text: _write(tmp, text))
    return 0


def _write(path: str, text: str) -> None:
    with open(path, 'w') as f:
        f.write(text)


if __name__ == '__main__':
    sys.exit(main())
