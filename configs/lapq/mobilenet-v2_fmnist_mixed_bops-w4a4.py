# The Fashion-MNIST MobileNetV2 (checkpoints/mobilenet-v2_fmnist.pth).
# Mixed precision (docs/mixed_precision.md): each layer's weight and input
# widths chosen by LAPQ's calibration loss under the BOPs of uniform W4A4,
# then LAPQ on that allocation with the settings of mobilenet-v2_fmnist_w4a4.py:
#   python tools/quantize.py configs/lapq/mobilenet-v2_fmnist_mixed_bops-w4a4.py
_base_ = ['./mobilenet-v2_fmnist_w4a4.py']

quantizer = dict(
    mixed=dict(budget=dict(bops_of='w4a4'), w_candidates=(2, 3, 4, 8),
               a_candidates=(4, 8)))
