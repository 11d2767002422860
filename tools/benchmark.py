"""Benchmarks of LAPQ against layer-wise clipping, and its speed.

    # accuracy: methods x bit widths, same FP32 weights and calibration set
    python tools/benchmark.py [CONFIG] [--methods max l2 l3 aciq lp lapq
        gptq lapq_gptq cle_gptq adaround qdrop lapq_qdrop]
        [--bits w8a8 w4a8 w4a4 w3a3 w2a4] [--seeds N] [--out DIR] [--quick]
    # speed: one loss evaluation vs. one FP32 forward of the calibration set
    python tools/benchmark.py [CONFIG] --speed
    # the markdown table and Pareto plots again, from DIR/benchmark.json
    python tools/benchmark.py --render DIR [--plot-format svg]

CONFIG defaults to the Fashion-MNIST W4A4 config. --seeds N runs every method
with N calibration draws (seeds 0..N-1) and reports mean +- std over them.
Writes DIR/benchmark.json,
DIR/benchmark.md and plots; --quick (CI) runs a small grid on a slice of the
data and exits 1 when LAPQ does not lower the calibration loss below its Lp
init by the margin of mmlapq.benchmark.gate.QUICK_GATE, or loses more
top-1 against FP32 than it allows, or a top-1 is NaN.
"""
import argparse
import sys

from mmengine.config import DictAction

DEFAULT_CONFIG = 'configs/lapq/vgg11bn_fmnist_w4a4.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    p.add_argument('--checkpoint', help='float checkpoint (default: '
                   'load_from of the config)')
    p.add_argument('--methods', nargs='+', help='subset of max l2 l3 aciq '
                   'lp cd lapq gptq lapq_gptq (and the orders compared in '
                   'README: lapq_gptq_after lapq_gptq_before_all; '
                   'equalization and block reconstruction: cle_gptq '
                   'adaround qdrop lapq_qdrop lapq_cle_qdrop '
                   'lapq_cle_qdrop_between; mixed precision at the BOPs of '
                   'each --bits: lapq_mixed, against the config\'s own '
                   'uniform settings: config)')
    p.add_argument('--bits', nargs='+', help='e.g. w8a8 w4a4 w2a4')
    p.add_argument('--out', help='output folder (default '
                   'work_dirs/benchmark[_quick|_speed])')
    p.add_argument('--quick', action='store_true', help='small grid on a '
                   'slice of the data, for CI')
    p.add_argument('--speed', action='store_true', help='measure '
                   'eval_cost_ratio only')
    p.add_argument('--calib-images', type=int)
    p.add_argument('--test-images', type=int, help='evaluate on the first N '
                   'test images (default all)')
    p.add_argument('--max-evals', type=int, help='bound on each joint search')
    p.add_argument('--seeds', type=int, help='run each method with N '
                   'calibration draws (seeds 0..N-1) and report mean +- '
                   'std of top-1 and calibration loss')
    p.add_argument('--plot-format', default='png', choices=['png', 'svg'],
                   help='format of the plots in OUT/plots (svg for docs/)')
    p.add_argument('--no-surface', action='store_true',
                   help='skip the 2-D loss surface plot')
    p.add_argument('--render', metavar='DIR', help='write DIR/benchmark.md'
                   ' and the Pareto plots again from DIR/benchmark.json '
                   '(runs nothing)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys, e.g. quantizer.w_bits=3')
    return p.parse_args(argv)


def main(argv=None) -> int:
    import mmlapq  # noqa: F401 - registers the quantizer
    from mmlapq.engine import LAPQError
    from mmlapq.benchmark.suite import BenchmarkOptions, run_benchmark
    from mmlapq.engine.config import load_config
    args = parse_args(argv)
    if args.render:
        from mmlapq.benchmark.suite import write_tables
        try:
            print(write_tables(args.render, args.plot_format))
        except LAPQError as exc:
            print(f'error: {exc}', file=sys.stderr)
            return 1
        return 0
    if args.seeds is not None and args.seeds < 1:
        print(f'error: --seeds {args.seeds}: use at least 1', file=sys.stderr)
        return 1
    opts = BenchmarkOptions(
        config=args.config, checkpoint=args.checkpoint,
        kind='speed' if args.speed else 'quick' if args.quick else 'full',
        methods=args.methods, bits=args.bits, out=args.out,
        calib_images=args.calib_images, test_images=args.test_images,
        max_evals=args.max_evals, plot_format=args.plot_format,
        surface=not args.no_surface, seeds=args.seeds,
        cfg_options=dict(args.cfg_options or {}))
    try:
        out = run_benchmark(load_config(args.config, args.cfg_options), opts)
    except LAPQError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(out['text'])
    for problem in out['problems']:
        print(f'benchmark check failed: {problem}', file=sys.stderr)
    return 1 if out['problems'] else 0


if __name__ == '__main__':
    sys.exit(main())
