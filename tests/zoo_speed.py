"""Exported zoo models at full size for the runtime benchmark (random
weights: speed only; docs/deployment.md, "Transformers"). Writes into OUT
a tiny synthetic ImageNet-layout folder, the user config of tests/zoo.py at
SIZE pixels, a random checkpoint, and per bit width a short LAPQ run (p
fixed, nearest rounding) exported to ONNX; then prints the
tools/benchmark_onnx.py command that times them:

    python tests/zoo_speed.py deit-t work_dirs/zoo_speed/deit-t [--size 224]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import zoo  # noqa: E402
from imagenet_fixture import make_imagenet_folder  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SHORT = ['quantizer.init.p=2.0', 'quantizer.rounding.method=nearest',
         'quantizer.search.method=none', 'quantizer.calib.holdout_images=0',
         'quantizer.calib.batch_size=4']


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('name', choices=sorted(zoo.ZOO))
    p.add_argument('out')
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--bits', type=int, nargs='+', default=[8, 4])
    args = p.parse_args(argv)
    zoo.SIZE = args.size
    if args.size == 224:  # the transformers' stock input size
        zoo.SMALL_INPUT.clear()
    root = make_imagenet_folder(osp.join(args.out, 'data'), num_train=16,
                                num_val=64)
    config = zoo.write_user_config(
        osp.join(args.out, f'{args.name}.py'), args.name, root,
        osp.join(REPO, 'configs', '_base_', 'lapq_w4a4.py'))
    ckpt = zoo.save_zoo_checkpoint(args.name,
                                   osp.join(args.out, 'float.pth'))
    sys.path.insert(0, osp.join(REPO, 'tools'))
    import export
    import quantize
    models = []
    for bits in args.bits:
        work_dir = osp.join(args.out, f'w{bits}a{bits}')
        code = quantize.main([
            config, '--checkpoint', ckpt, '--work-dir', work_dir,
            '--calib-images', '8', '--cfg-options',
            f'quantizer.w_bits={bits}', f'quantizer.a_bits={bits}',
            f'experiment_name={args.name}_w{bits}', *SHORT])
        if code:
            return code
        qckpt = osp.join(work_dir, 'lapq_quantized.pth')
        if export.main([config, qckpt]):
            return 1
        models.append(f'w{bits}a{bits}={osp.splitext(qckpt)[0]}.onnx')
    print('python tools/benchmark_onnx.py', config, *models, '--checkpoint',
          ckpt, '--calib-images', '16', '--ort-dynamic', '--no-openvino')
    return 0


if __name__ == '__main__':
    sys.exit(main())
