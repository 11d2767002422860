"""The per-layer latency table of a mixed-precision latency budget.

    python tools/latency_table.py CONFIG --out latency.json
        [--checkpoint FLOAT.pth] [--w-candidates 2 3 4 8]
        [--a-candidates 4 8] [--batch-size 1] [--threads 1] [--runs 20]

Exports the config's float model at each uniform candidate width, profiles
each in onnxruntime and writes each layer's median kernel time at each
width (docs/mixed_precision.md). Then:
    quantizer.mixed = dict(budget=dict(latency=MS, table='latency.json'))
"""
import argparse
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--out', required=True, help='the table (json)')
    p.add_argument('--checkpoint', help='float checkpoint (default: '
                   'load_from of the config)')
    p.add_argument('--w-candidates', type=int, nargs='+',
                   default=[2, 3, 4, 8])
    p.add_argument('--a-candidates', type=int, nargs='+', default=[4, 8])
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--runs', type=int, default=20)
    p.add_argument('--free-first-last', action='store_true')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None) -> int:
    import mmlapq  # noqa: F401 - registers the quantizer
    from mmlapq.benchmark.latency_table import latency_table
    from mmlapq.engine import LAPQError
    from mmlapq.engine.config import load_config
    from mmlapq.engine.evaluation import get_logger
    from mmlapq.engine.report_builder import dump_json
    args = parse_args(argv)
    try:
        if args.batch_size < 1 or args.runs < 1 or args.threads < 1:
            raise LAPQError('--batch-size, --runs and --threads must be >= 1')
        cfg = load_config(args.config, args.cfg_options)
        table = latency_table(
            cfg, args.checkpoint or cfg.get('load_from'), args.w_candidates,
            args.a_candidates, args.batch_size, args.runs, args.threads,
            args.free_first_last, get_logger('mmlapq'))
        dump_json(table, args.out)
    except (LAPQError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f"{len(table['layers'])} layers, {table['runtime']}, batch "
          f"{table['batch_size']}, {table['threads']} thread(s): "
          f'{args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
