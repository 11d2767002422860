"""Benchmarks of LAPQ against layer-wise clipping, and its speed.

    # accuracy: methods x bit widths, same FP32 weights and calibration set
    python tools/benchmark.py [CONFIG] [--methods max l2 l3 aciq lp lapq
        gptq lapq_gptq]
        [--bits w8a8 w4a8 w4a4 w3a3 w2a4] [--out DIR] [--quick]
    # speed: one loss evaluation vs. one FP32 forward of the calibration set
    python tools/benchmark.py [CONFIG] --speed

CONFIG defaults to the Fashion-MNIST W4A4 config. Writes DIR/benchmark.json,
DIR/benchmark.md and plots; --quick (CI) runs a small grid on a slice of the
data and exits 1 when LAPQ does not lower the calibration loss below its Lp
init by the margin of mmlapq.engine.benchmark.QUICK_GATE, or loses more
top-1 against FP32 than it allows, or a top-1 is NaN.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import sys

DEFAULT_CONFIG = 'configs/lapq/vgg11bn_fmnist_w4a4.py'
QUICK = dict(methods=['max', 'l2', 'lp', 'lapq'], bits=['w4a4', 'w3a3'],
             calib_images=128, test_images=1000, max_evals=120)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    p.add_argument('--checkpoint', help='float checkpoint (default: '
                   'load_from of the config)')
    p.add_argument('--methods', nargs='+', help='subset of max l2 l3 aciq '
                   'lp cd lapq gptq lapq_gptq (and the orders compared in '
                   'README: lapq_gptq_after lapq_gptq_before_all)')
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
    p.add_argument('--plot-format', default='png', choices=['png', 'svg'],
                   help='format of the plots in OUT/plots (svg for docs/)')
    p.add_argument('--no-surface', action='store_true',
                   help='skip the 2-D loss surface plot')
    from mmengine.config import DictAction
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys, e.g. quantizer.w_bits=3')
    return p.parse_args(argv)


def markdown(rows, header: dict) -> str:
    lines = [f"# Benchmark: {header['config']}", '',
             f"checkpoint `{header['checkpoint']}`; calibration "
             f"{header['calib_images']} images (training split); test "
             f"{header['test_images']} images; {header['env']['device']}; "
             f"torch {header['env']['torch']}, mmcls {header['env']['mmcls']}"
             f", mmengine {header['env']['mmengine']}, mmlapq "
             f"{header['env']['mmlapq']}; {header['env']['date']}", '',
             '| W/A | method | top-1 | top-5 | calib loss | p | evals | '
             'seconds |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        wa = 'FP32' if r['method'] == 'fp32' else f"W{r['w_bits']}A{r['a_bits']}"
        fmt = (lambda v, d=2: '-' if v is None else f'{v:.{d}f}')
        lines.append(f"| {wa} | {r['method']} | {fmt(r['top1'])} | "
                     f"{fmt(r.get('top5'))} | {fmt(r['calib_loss'], 4)} | "
                     f"{fmt(r.get('p'))} | {r['func_evals']} | "
                     f"{r['seconds']:.1f} |")
    return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config

    from mmlapq.engine.quantizer import tf32_mode
    if not osp.isfile(args.config):
        print(f'error: config {args.config} does not exist', file=sys.stderr)
        return 1
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # Every stage under the config's TF32 setting, as in tools/quantize.py.
    with tf32_mode(cfg.quantizer.get('allow_tf32', False)):
        return run(args, cfg)


def run(args, cfg) -> int:
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    import mmlapq  # noqa: F401
    from mmlapq.engine import LAPQError
    from mmlapq.engine import benchmark as bm
    from mmlapq.report import collect_env, plot_loss_surface
    init_default_scope(cfg.get('default_scope', 'mmcls'))
    logger = MMLogger.get_instance('mmlapq_benchmark', log_level='INFO')
    kind = 'speed' if args.speed else ('quick' if args.quick else 'full')
    out = args.out or osp.join('work_dirs', 'benchmark' + (
        '' if kind == 'full' else f'_{kind}'))
    checkpoint = args.checkpoint or cfg.get('load_from')
    try:
        methods = args.methods or (QUICK['methods'] if args.quick
                                   else list(bm.DEFAULT_METHODS))
        unknown = [m for m in methods if m not in bm.METHODS]
        if unknown:
            raise LAPQError(f'unknown methods {unknown}: use '
                            f'{", ".join(bm.METHODS)}')
        bits = [bm.parse_bits(b) for b in (args.bits or (
            QUICK['bits'] if args.quick else list(bm.DEFAULT_BITS)))]
        model = bm.build_float_model(cfg, checkpoint)
        calib_images = args.calib_images or (QUICK['calib_images']
                                             if args.quick else None)
        calib, record = bm.calibration(cfg, model, calib_images, logger)
        os.makedirs(out, exist_ok=True)
        if args.speed:
            res = bm.speed_benchmark(cfg, model, calib,
                                     max_evals=args.max_evals, logger=logger)
            res['env'] = collect_env()
            with open(osp.join(out, 'speed.json'), 'w') as f:
                json.dump(res, f, indent=2)
            print(f"W{res['w_bits']}A{res['a_bits']}, {res['num_images']} "
                  f"calibration images: FP32 forward "
                  f"{res['fp32_forward_s']:.3f} s, loss evaluation "
                  f"{res['eval_s']:.3f} s (mean of {res['func_evals']} "
                  f"Powell-phase evaluations, channels_last="
                  f"{res['channels_last']})")
            print(f"eval_cost_ratio: {res['eval_cost_ratio']:.3f}")
            return 0
        test_images = args.test_images or (QUICK['test_images']
                                           if args.quick else None)
        test = bm.test_tensors(cfg, model, test_images)
        max_evals = args.max_evals or (QUICK['max_evals'] if args.quick
                                       else None)
        plot_dir = osp.join(out, 'plots')
        rows = bm.methods_benchmark(cfg, model, calib, test, methods, bits,
                                    max_evals, logger, plot_dir,
                                    args.plot_format)
        surfaces = []
        if not args.quick and not args.no_surface:
            surfaces = [bm.loss_surface(cfg, model, calib, b, logger=logger)
                        for b in (4, 2)]
            plot_loss_surface(surfaces, osp.join(
                plot_dir, f'loss_surface.{args.plot_format}'))
    except LAPQError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    header = dict(config=args.config, checkpoint=checkpoint,
                  calib_images=calib.num_images, test_images=test.num_images,
                  calibration=record, env=collect_env(),
                  max_evals=max_evals, kind=kind,
                  date=datetime.date.today().isoformat())
    with open(osp.join(out, 'benchmark.json'), 'w') as f:
        json.dump(dict(header, rows=rows, surfaces=surfaces), f, indent=2)
    table = markdown(rows, header)
    with open(osp.join(out, 'benchmark.md'), 'w') as f:
        f.write(table)
    print(table)
    problems = bm.quick_gate(rows) if args.quick else []
    for p in problems:
        print(f'benchmark check failed: {p}', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
