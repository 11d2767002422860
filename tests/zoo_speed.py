"""Runtime speed of the zoo backbones (random weights: speed only;
docs/zoo.md, "Speed"). For each backbone, writes into OUT/NAME a tiny
synthetic ImageNet-layout folder, the user config of tests/zoo.py at SIZE
pixels, a random checkpoint, and per bit width a short LAPQ run (p fixed,
nearest rounding) exported to ONNX (kept when it is there already). Then,
with --time, times them with tools/benchmark_onnx.py's benchmark in
onnxruntime (FP32, its static int8, its dynamic int8 for the
transformers, ours; batch 1 and 64, in turns in one process) and counts
the float convs and matrix products left in each optimized graph; writes
zoo_speed.json and zoo_speed.md (into --results, default OUT):

    python tests/zoo_speed.py all --out work_dirs/zoo_speed --bits 8 \
        --time --results docs/zoo_speed
    python tests/zoo_speed.py deit-t --out work_dirs/zoo_speed [--size 224]

Without --time it prepares the files and prints the benchmark_onnx
command of each backbone.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import numpy as np  # noqa: E402

import zoo  # noqa: E402
from imagenet_fixture import make_imagenet_folder  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHORT = ['quantizer.init.p=2.0', 'quantizer.rounding.method=nearest',
         'quantizer.search.method=none', 'quantizer.calib.holdout_images=0',
         'quantizer.calib.batch_size=4']
TRANSFORMERS = ('deit-t', 'swin-t')


def prepare(name: str, out: str, size: int, bits_list) -> dict:
    """The config, the float checkpoint and {label: ONNX path} of ours."""
    sys.path.insert(0, osp.join(REPO, 'tools'))
    import export
    import quantize
    zoo.SIZE = size
    if size == 224:  # the transformers' stock input size
        zoo.SMALL_INPUT.clear()
    root = make_imagenet_folder(osp.join(out, 'data'), num_train=16,
                                num_val=64)
    config = zoo.write_user_config(
        osp.join(out, f'{name}.py'), name, root,
        osp.join(REPO, 'configs', '_base_', 'lapq_w4a4.py'))
    ckpt = osp.join(out, 'float.pth')
    if not osp.isfile(ckpt):
        zoo.save_zoo_checkpoint(name, ckpt)
    models = {}
    for bits in bits_list:
        work_dir = osp.join(out, f'w{bits}a{bits}')
        qckpt = osp.join(work_dir, 'lapq_quantized.pth')
        onnx_path = osp.splitext(qckpt)[0] + '.onnx'
        if not osp.isfile(onnx_path):
            code = quantize.main([
                config, '--checkpoint', ckpt, '--work-dir', work_dir,
                '--calib-images', '8', '--cfg-options',
                f'quantizer.w_bits={bits}', f'quantizer.a_bits={bits}',
                f'experiment_name={name}_w{bits}',
                'quantizer.conv_output_bits=8', *SHORT])
            if code or export.main([config, qckpt]):
                raise SystemExit(f'error: {name} W{bits}A{bits} did not '
                                 'quantize and export (log above)')
        models[f'w{bits}a{bits}'] = onnx_path
    return dict(config=config, checkpoint=ckpt, models=models, size=size)


def float_layers(path: str, work_dir: str) -> dict:
    """Float convs and matrix products in onnxruntime's optimized graph."""
    from mmlapq.export.onnxruntime import FLOAT_KERNELS, optimized_ops
    counts = optimized_ops(path, work_dir)['counts']
    convs = sum(counts.get(op, 0) for op in FLOAT_KERNELS if 'Conv' in op)
    return dict(convs=convs,
                matmuls=sum(counts.get(op, 0) for op in FLOAT_KERNELS)
                - convs)


def time_backbone(name: str, prepared: dict, out: str, rounds: int) -> dict:
    import mmlapq  # noqa: F401
    from mmlapq.benchmark.onnx_runtimes import runtime_benchmark
    from mmlapq.engine.config import load_config
    cfg = load_config(prepared['config'])
    result = runtime_benchmark(
        cfg, prepared['models'], osp.join(out, 'runtime'),
        prepared['checkpoint'], [1, 64], 2, rounds, 16, 64, openvino=False,
        ort_dynamic=name in TRANSFORMERS, transformer=False,
        log=lambda m: print(f'{name}: {m}', file=sys.stderr))
    files = result['files']
    for row in result['rows']:
        if row['model'] in files:
            row['float_layers'] = float_layers(files[row['model']], out)
    # where the time goes at batch 64: ours and onnxruntime's static int8
    from mmlapq.export.onnxruntime import op_type_times
    x = np.random.default_rng(0).standard_normal(
        (64, 3, prepared['size'], prepared['size'])).astype(np.float32)
    result['op_ms_b64'] = {
        label: op_type_times(files[label], x, runs=3, threads=2,
                             work_dir=out)
        for label in ('w8a8', 'onnxruntime int8')}
    # ours against PyTorch on the 64 synthetic images, in both runtimes
    from mmlapq.engine.export import compare_with_runtime
    qckpt = osp.splitext(prepared['models']['w8a8'])[0] + '.pth'
    result['agreement'] = {
        runtime: compare_with_runtime(cfg, qckpt, prepared['models']['w8a8'],
                                      batch_size=16, runtime=runtime)
        for runtime in ('onnxruntime', 'openvino')}
    return result


def agreement_line(results: dict) -> str:
    parts = []
    for name, result in results.items():
        a = result['agreement']
        parts.append(f"{name} {a['onnxruntime']['agreement']:.1f} / "
                     f"{a['openvino']['agreement']:.1f}")
    return ('Ours W8A8 predicting what PyTorch predicts, % of the 64 '
            'synthetic images, onnxruntime / OpenVINO: ' + ', '.join(parts))


def costliest_op(result: dict) -> str:
    """The op type whose time at batch 64 exceeds onnxruntime's static
    int8 model's the most, and by how many ms."""
    ours, static = result['op_ms_b64']['w8a8'], \
        result['op_ms_b64']['onnxruntime int8']
    excess = {op: ms - static.get(op, 0.0) for op, ms in ours.items()}
    op = max(excess, key=excess.get)
    return f'{op} +{excess[op]:.0f} ms'


def table(results: dict) -> str:
    lines = ['| backbone | ours W8A8 x onnxruntime static int8, batch 1 / '
             '64 | x its dynamic int8, batch 1 / 64 | ours x FP32, batch 1 '
             '/ 64 | ms at batch 1 / 64: FP32, static int8, ours | float '
             'convs / matmuls left: ours, static int8 | op over static '
             'int8 the most (batch 64) |',
             '|---|---|---|---|---|---|---|']
    for name, result in results.items():
        rows = {r['model']: r for r in result['rows']}
        ours, static, fp32 = rows['w8a8'], rows['onnxruntime int8'], \
            rows['FP32']
        dynamic = rows.get('onnxruntime dynamic int8')

        def ratio(a, b):
            return ' / '.join(f"{a[f'b{n}_ms'] / b[f'b{n}_ms']:.2f}"
                              for n in (1, 64))

        def ms(row):
            return ' / '.join(f"{row[f'b{n}_ms']:.1f}" for n in (1, 64))

        def left(row):
            f = row['float_layers']
            return f"{f['convs']} / {f['matmuls']}"
        lines.append(
            f"| {name} | {ratio(ours, static)} | "
            f"{ratio(ours, dynamic) if dynamic else '-'} | "
            f"{ratio(ours, fp32)} | {ms(fp32)}; {ms(static)}; {ms(ours)} | "
            f"{left(ours)}; {left(static)} | {costliest_op(result)} |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('names', nargs='+', choices=sorted(zoo.ZOO) + ['all'])
    p.add_argument('--out', required=True)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--bits', type=int, nargs='+', default=[8, 4])
    p.add_argument('--time', action='store_true',
                   help='time them and write OUT/zoo_speed.json and .md')
    p.add_argument('--rounds', type=int, default=10)
    p.add_argument('--results', help='where zoo_speed.json and .md go '
                   '(default: OUT)')
    args = p.parse_args(argv)
    names = sorted(zoo.ZOO) if 'all' in args.names else args.names
    if args.time and 8 not in args.bits:
        p.error('--time compares W8A8 models: include 8 in --bits')
    prepared = {n: prepare(n, osp.join(args.out, n), args.size, args.bits)
                for n in names}
    if not args.time:
        for name, prep in prepared.items():
            print('python tools/benchmark_onnx.py', prep['config'],
                  *[f'{k}={v}' for k, v in prep['models'].items()],
                  '--checkpoint', prep['checkpoint'], '--calib-images', '16',
                  '--ort-dynamic', '--no-openvino')
        return 0
    import torch
    from mmlapq.engine.env import cpu_model
    results_dir = args.results or args.out
    os.makedirs(results_dir, exist_ok=True)
    stored = osp.join(results_dir, 'zoo_speed.json')
    # Backbones timed before (another call) keep their rows.
    results = json.load(open(stored))['backbones'] \
        if osp.isfile(stored) else {}
    for name in names:
        result = time_backbone(name, prepared[name], osp.join(args.out, name),
                               args.rounds)
        result.update(cpu=cpu_model(), torch=torch.__version__,
                      date=datetime.date.today().isoformat(),
                      size=args.size)
        results[name] = result
    results = dict(sorted(results.items()))
    where = sorted({f"{r['cpu']}, {r['date']}, {r['size']}x{r['size']}, "
                    f"median of {r['rounds']} rounds"
                    for r in results.values()})
    text = (table(results) + '\n\n' + agreement_line(results) +
            '\n\nRandom weights (speed only), onnxruntime, 2 threads, '
            'each backbone\'s models timed in turns in one process: ' +
            '; '.join(where) + '. Written by `python tests/zoo_speed.py`.')
    summary = dict(threads=2, backbones=results)
    with open(osp.join(results_dir, 'zoo_speed.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    with open(osp.join(results_dir, 'zoo_speed.md'), 'w') as f:
        f.write(text + '\n')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
