"""Unzip Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist) into
data/fashion_mnist, where configs/fmnist/*.py read it."""
import argparse
import sys

from mmlapq.datasets import prepare_fashion_mnist


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default='data/fashion_mnist')
    args = parser.parse_args()
    try:
        out = prepare_fashion_mnist(args.out)
    except FileNotFoundError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'Fashion-MNIST ready in {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
