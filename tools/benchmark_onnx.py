"""Size and onnxruntime CPU latency of exported models, on one batch of the
config's test set (same batch, same threads, median of several runs).

    python tools/benchmark_onnx.py CONFIG fp32.onnx w8a8.onnx w4a4.onnx
        [--batch-size 64] [--threads 2] [--runs 20]
"""
import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('onnx', nargs='+')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--runs', type=int, default=20)
    return p.parse_args(argv)


def main(argv=None) -> int:
    import mmlapq  # noqa: F401
    from mmlapq.engine import LAPQError
    from mmlapq.engine.config import load_config
    from mmlapq.engine.export import latency_table
    args = parse_args(argv)
    try:
        rows = latency_table(load_config(args.config), args.onnx,
                             args.batch_size, args.threads, args.runs)
    except LAPQError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'| model | MB | ms per batch of {args.batch_size} (median) | '
          f'min | max |')
    print('|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['file']} | {r['mb']:.2f} | {1000 * r['median_s']:.1f} "
              f"| {1000 * r['min_s']:.1f} | {1000 * r['max_s']:.1f} |")
    print(f"onnxruntime, {args.threads} threads, {args.runs} runs each")
    return 0


if __name__ == '__main__':
    sys.exit(main())
