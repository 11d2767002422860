"""Quantize an mmcls classifier with LAPQ and evaluate it with mmcls's metric.

    python tools/quantize.py configs/lapq/vgg16_w4a4.py
    python tools/quantize.py CONFIG --checkpoint vgg16.pth --calib-images 256
    python tools/quantize.py CONFIG --eval-quantized WORK_DIR/lapq_quantized.pth
    python tools/quantize.py CONFIG --resume     # after Ctrl-C / SIGTERM

Outputs in the work dir: the mmengine log, lapq_report.json/.md, the
quantized checkpoint lapq_quantized.pth and plots/. Errors in the user's
input print one line ``error: ...`` and exit with status 1, leaving nothing
behind. Ctrl-C or SIGTERM finishes the run at its best point so far
(reported as interrupted, exit status 130 / 143); --resume continues it.
"""
import argparse
import os
import sys

from mmengine.config import DictAction


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='LAPQ post-training quantization of an mmcls model')
    parser.add_argument('config', help='LAPQ config file')
    parser.add_argument('--checkpoint', help='float checkpoint (overrides '
                        'load_from of the config)')
    parser.add_argument('--work-dir', help='where outputs go (default '
                        'work_dirs/<config name>)')
    parser.add_argument('--calib-images', type=int,
                        help='number of calibration images '
                        '(quantizer.calib.num_images)')
    parser.add_argument('--max-evals', type=int, help='bound on the joint '
                        "search's loss evaluations "
                        '(quantizer.search.max_evals)')
    parser.add_argument('--resume', action='store_true',
                        help='continue an interrupted run from the search '
                        'state in its work dir')
    parser.add_argument('--eval-quantized', metavar='QUANTIZED_CKPT',
                        help='evaluate a saved lapq_quantized.pth instead of '
                        'quantizing')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. quantizer.w_bits=3')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg, args):
    """The command line's shortcuts into the config."""
    from mmlapq.engine.config import default_work_dir
    if args.checkpoint:
        cfg.load_from = args.checkpoint
    if args.calib_images is not None:
        cfg.quantizer.setdefault('calib', {})['num_images'] = \
            args.calib_images
    if args.max_evals is not None:
        cfg.quantizer.setdefault('search', {})['max_evals'] = args.max_evals
    cfg.launcher = args.launcher
    if args.launcher != 'none':
        # A rank that stops answering fails the collectives after this many
        # seconds instead of hanging the others forever.
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {}).setdefault(
            'timeout', 1800)
    cfg.work_dir = args.work_dir or default_work_dir(cfg, args.config)
    return cfg


def main(argv=None) -> int:
    from mmengine import dist

    from mmlapq.engine import LAPQError
    from mmlapq.engine.config import load_config
    from mmlapq.engine.interrupt import exit_status
    from mmlapq.engine.launch import quantize_from_config
    from mmlapq.report import summary_table
    args = parse_args(argv)
    try:
        cfg = merge_args(load_config(args.config, args.cfg_options), args)
        state = quantize_from_config(cfg, args.eval_quantized, args.resume)
    except LAPQError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('error: aborted; no report was written (a search state in '
              'the work dir, if any, is kept for --resume)', file=sys.stderr)
        return 130
    if dist.is_main_process():
        if state.report is not None:
            print(summary_table(state.report))
            print(f"report: {os.path.join(cfg.work_dir, 'lapq_report.json')}")
        elif state.quantized_metrics is not None:
            print(f'quantized model: {state.quantized_metrics}')
    status = exit_status()
    if status:
        print('error: interrupted: the report holds the best point found '
              'before the signal; continue with --resume', file=sys.stderr)
    return status


if __name__ == '__main__':
    sys.exit(main())
