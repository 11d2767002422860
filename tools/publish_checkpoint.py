"""Strip a training checkpoint down to what inference needs and print its
sha256: the model's state dict (half precision with --half) and plain
metadata, loadable with torch.load(weights_only=True).

    python tools/publish_checkpoint.py work_dirs/vgg11bn_fmnist/epoch_5.pth \
        checkpoints/vgg11bn_fmnist.pth --half
"""
import argparse
import hashlib
import os
import sys

import torch

from mmlapq.fileio import atomic_write


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--half', action='store_true',
                   help='store floating-point tensors in float16')
    args = p.parse_args(argv)
    if not os.path.isfile(args.src):
        print(f'error: checkpoint {args.src} does not exist', file=sys.stderr)
        return 1
    # A training checkpoint of mmengine pickles config objects: it is the
    # user's own file, so it is unpickled in full here.
    ckpt = torch.load(args.src, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt)
    out = {}
    for key, value in state.items():
        if args.half and value.is_floating_point():
            value = value.half()
        out[key] = value.contiguous()
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    plain_meta = dict(epoch=meta.get('epoch'), iter=meta.get('iter'),
                      source=os.path.basename(args.src),
                      storage='float16' if args.half else 'float32')
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    atomic_write(args.dst, lambda tmp: torch.save(
        dict(state_dict=out, meta=plain_meta), tmp))
    size = os.path.getsize(args.dst) / 2**20
    print(f'{args.dst}: {size:.1f} MiB, sha256 {sha256(args.dst)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
