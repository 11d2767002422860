"""Write (or check) the figures of configs/lapq/README.md,
configs/lapq/metafile.yml and model-index.yml from the stored runs.

    python tools/results.py --write   # after storing a new run
    python tools/results.py --check   # CI: fails where a file differs
"""
import argparse
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument('--write', action='store_true')
    mode.add_argument('--check', action='store_true')
    p.add_argument('--repo', default=REPO, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, args.repo)
    import functools

    from mmengine.config import Config

    from mmlapq.report.result_tables import stale_files, write_files

    @functools.lru_cache(maxsize=None)
    def load_from(config: str):
        return Config.fromfile(config).get('load_from')
    try:
        if args.write:
            for path in write_files(args.repo, load_from):
                print(f'wrote {path}')
            return 0
        stale = stale_files(args.repo, load_from)
    except (OSError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    for path in stale:
        print(f'error: {path} differs from the stored runs: run python '
              'tools/results.py --write (never edit its figures by hand)',
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == '__main__':
    sys.exit(main())
