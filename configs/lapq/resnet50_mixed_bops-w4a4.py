# mmcls's ImageNet ResNet-50, official checkpoint (76.55).
# Mixed precision (docs/mixed_precision.md): each layer's weight and input
# widths chosen by LAPQ's calibration loss under the BOPs of uniform W4A4,
# then LAPQ on that allocation with the settings of resnet50_w4a4.py:
#   python tools/quantize.py configs/lapq/resnet50_mixed_bops-w4a4.py
_base_ = ['./resnet50_w4a4.py']

quantizer = dict(
    mixed=dict(budget=dict(bops_of='w4a4'), w_candidates=(2, 3, 4, 8),
               a_candidates=(4, 8)))
