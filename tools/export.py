"""Export a quantized (or float) mmcls model to ONNX and check it.

    python tools/export.py CONFIG WORK_DIR/lapq_quantized.pth [--out FILE]
        [--weight-storage int8|int4] [--opset N] [--batch-size 1]
        [--verify [--test-images N]]

A quantized checkpoint of mmlapq becomes a QDQ model that onnxruntime and
OpenVINO run on integer kernels (INT8 weight initializers, INT32 biases,
UINT8 QuantizeLinear / DequantizeLinear on the quantized tensors); a float
checkpoint becomes a plain float model. Input ``input``: what the
model's forward receives after mmcls's data preprocessor (normalized NCHW
float32, any batch size); output ``scores``: the class scores. --verify runs
it in onnxruntime on the config's test set against the PyTorch model.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint', help='lapq_quantized.pth of a run, or a '
                   'float checkpoint')
    p.add_argument('--out', help='ONNX file (default: the checkpoint with '
                   '.onnx)')
    p.add_argument('--weight-storage', choices=['int8', 'int4'],
                   default='int8', help='int8 (default): every weight as '
                   'INT8, what integer kernels run; int4: 4-bit codes as '
                   'INT4 (opset 21), half the size, but those layers run as '
                   'float convs')
    p.add_argument('--opset', type=int, help='default 17; 21 with '
                   '--weight-storage int4')
    p.add_argument('--batch-size', type=int, default=1,
                   help='batch of the example input (the exported batch '
                   'axis is dynamic)')
    p.add_argument('--verify', action='store_true', help='compare with the '
                   'PyTorch model in onnxruntime on the test set')
    p.add_argument('--test-images', type=int, help='with --verify: the first'
                   ' N test images (default all)')
    p.add_argument('--divergence', type=int, metavar='N',
                   help='per activation quantizer, the share of codes '
                   'OpenVINO computes differently from onnxruntime on the '
                   'first N test images (where the runtimes part); writes '
                   'OUT without .onnx + _divergence.json')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    return p.parse_args(argv)


def main(argv=None) -> int:
    import mmlapq  # noqa: F401
    from mmlapq.engine import LAPQError
    from mmlapq.engine.config import load_config
    from mmlapq.engine.export import compare_with_onnxruntime, export_onnx, \
        openvino_code_divergence
    from mmlapq.engine.report_builder import dump_json
    args = parse_args(argv)
    out = args.out or osp.splitext(args.checkpoint)[0] + '.onnx'
    try:
        cfg = load_config(args.config, args.cfg_options)
        info = export_onnx(cfg, args.checkpoint, out, args.opset,
                           args.batch_size, args.weight_storage)
        print(f"{out}: opset {info['opset']}, "
              f'{osp.getsize(out) / 1e6:.2f} MB')
        if not info['dynamic_batch']:
            print(f'  batch fixed at {args.batch_size}: the forward bakes '
                  'its batch into reshapes, so a dynamic batch axis would '
                  'compute other batches wrong (pass --batch-size N)')
        for name, row in info['layers'].items():
            print(f'  {name}: ' + ', '.join(f'{k} {v}'
                                            for k, v in row.items()))
        if args.verify:
            res = compare_with_onnxruntime(cfg, args.checkpoint, out,
                                           args.test_images)
            print(f"onnxruntime vs PyTorch on {res['images']} test images: "
                  f"top-1 {res['top1_onnxruntime']:.2f} vs "
                  f"{res['top1_torch']:.2f}, predictions agree on "
                  f"{res['agreement']:.2f}%, largest logit difference "
                  f"{res['max_abs_logit_diff']:.4g}")
            from mmlapq.export.cpu import SATURATION_NOTE, \
                int8_pairs_saturate
            if int8_pairs_saturate():
                print(f'  note: {SATURATION_NOTE}')
        if args.divergence:
            res = openvino_code_divergence(cfg, args.checkpoint, out,
                                           args.divergence)
            print(f"OpenVINO vs onnxruntime on {res['images']} test "
                  f"images: predictions agree on "
                  f"{res['predictions_agree']:.2f}%; codes that differ, "
                  "per activation quantizer:")
            for row in res['rows']:
                print(f"  {row['place']}: {row['codes_differing']:.3f}%, "
                      f"up to {row['max_steps']:.0f} steps")
            dump_json(res, osp.splitext(out)[0] + '_divergence.json')
    except LAPQError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
