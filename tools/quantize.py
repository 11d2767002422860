"""Quantize an mmcls classifier with LAPQ and evaluate it with mmcls's metric.

    python tools/quantize.py configs/lapq/vgg16_w4a4.py
    python tools/quantize.py CONFIG --checkpoint vgg16.pth --calib-images 256
    python tools/quantize.py CONFIG --eval-quantized WORK_DIR/lapq_quantized.pth

Outputs in the work dir: the mmengine log, lapq_report.json/.md, the
quantized checkpoint lapq_quantized.pth and plots/. Errors in the user's
input print one line ``error: ...`` and exit with status 1, leaving nothing
behind.
"""
import argparse
import os
import os.path as osp
import shutil
import sys

from mmengine.config import Config, DictAction


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
    parser.add_argument('--eval-quantized', metavar='QUANTIZED_CKPT',
                        help='evaluate a saved lapq_quantized.pth instead of '
                        'quantizing')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. quantizer.w_bits=3')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args) -> Config:
    from mmlapq.engine import LAPQError
    if not osp.isfile(args.config):
        raise LAPQError(f'config {args.config} does not exist: pass the path '
                        'of a config file, e.g. configs/lapq/vgg16_w4a4.py')
    try:
        cfg = Config.fromfile(args.config)
    except Exception as exc:  # noqa: BLE001 - syntax errors, bad _base_
        raise LAPQError(f'cannot read config {args.config} '
                        f'({str(exc).splitlines()[0]})') from None
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if 'quantizer' not in cfg:
        raise LAPQError(f'config {args.config} has no `quantizer`: inherit '
                        'configs/_base_/lapq_w4a4.py')
    if args.calib_images is not None:
        cfg.quantizer.setdefault('calib', {})['num_images'] = \
            args.calib_images
    if args.max_evals is not None:
        cfg.quantizer.setdefault('search', {})['max_evals'] = args.max_evals
    cfg.launcher = args.launcher
    if args.launcher != 'none':
        dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
        # A rank that stops answering fails the collectives after this many
        # seconds instead of hanging the others forever.
        dist_cfg.setdefault('timeout', 1800)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    if osp.exists(cfg.work_dir) and not osp.isdir(cfg.work_dir):
        raise LAPQError(f'work dir {cfg.work_dir} is an existing file, not a '
                        'folder: pass another path with --work-dir')
    return cfg


def run(args) -> dict:
    import mmlapq  # noqa: F401 - registers the hooks and the quantizer
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from mmlapq.engine import LAPQError
    from mmlapq.engine.checkpoint import (load_state_dict_strict,
                                          read_state_dict)
    from mmlapq.engine.data_checks import check_datasets, reading_data
    from mmlapq.engine.dist import init_distributed, ranks_agree
    from mmlapq.engine.hooks import INFO, unwrap
    from mmlapq.engine.quantizer import tf32_mode
    from mmlapq.quant import plan_layers
    from mmlapq.registry import MODELS

    cfg = build_cfg(args)
    init_default_scope(cfg.get('default_scope', 'mmcls'))
    quantizer = MODELS.build(cfg.quantizer)  # bad settings fail here
    init_distributed(cfg)
    state, checkpoint = None, None
    # Files are read on every process: a failure on one stops all of them
    # with the same line, before the first collective.
    with ranks_agree():
        if args.eval_quantized:
            if not osp.isfile(args.eval_quantized):
                raise LAPQError(f'quantized checkpoint {args.eval_quantized}'
                                ' does not exist: pass the '
                                'lapq_quantized.pth of a run')
            cfg.lapq_quantized_checkpoint = args.eval_quantized
        else:
            checkpoint = args.checkpoint or cfg.get('load_from')
            if not checkpoint:
                raise LAPQError('no checkpoint: set load_from in the config '
                                'or pass --checkpoint PATH')
            state = read_state_dict(checkpoint)
        check_datasets(cfg, quantize=not args.eval_quantized)
    cfg.load_from = None  # loaded strictly below, not leniently by mmengine

    work_dir_existed = osp.isdir(cfg.work_dir)
    runner = Runner.from_cfg(cfg)
    try:
        with ranks_agree():
            if state is not None:
                load_state_dict_strict(unwrap(runner.model), state,
                                       checkpoint)
                runner.message_hub.update_info(INFO + 'checkpoint',
                                               checkpoint)
            # A layer pattern that matches nothing fails now, not after the
            # FP32 evaluation.
            try:
                plan_layers(unwrap(runner.model), quantizer.quant)
            except ValueError as exc:
                raise LAPQError(str(exc)) from None
        # Every stage (FP32 evaluation, search, final test) under the one
        # TF32 setting of the config.
        with tf32_mode(quantizer.allow_tf32), reading_data():
            runner.test()
    except BaseException:
        # Leave nothing half-written: this run's log folder goes, and the
        # work dir too if this run made it.
        shutil.rmtree(runner.log_dir, ignore_errors=True)
        if not work_dir_existed:
            shutil.rmtree(cfg.work_dir, ignore_errors=True)
        raise
    hub = runner.message_hub
    return dict(report=hub.get_info(INFO + 'report'),
                quantized=hub.get_info(INFO + 'quantized'),
                work_dir=cfg.work_dir)


def main(argv=None) -> int:
    from mmlapq.engine import LAPQError
    args = parse_args(argv)
    try:
        out = run(args)
    except LAPQError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('error: interrupted before the search started; nothing was '
              'written', file=sys.stderr)
        return 130
    from mmengine import dist
    if dist.is_main_process():
        if out['report'] is not None:
            from mmlapq.report import summary_table
            print(summary_table(out['report']))
            print(f"report: {osp.join(out['work_dir'], 'lapq_report.json')}")
        elif out['quantized'] is not None:
            print(f"quantized model: {out['quantized']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
