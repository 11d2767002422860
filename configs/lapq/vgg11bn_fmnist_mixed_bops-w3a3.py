# The Fashion-MNIST VGG-11-BN (checkpoints/vgg11bn_fmnist.pth).
# Mixed precision (docs/mixed_precision.md): each layer's weight and input
# widths chosen by LAPQ's calibration loss under the BOPs of uniform W3A3,
# then LAPQ on that allocation with the settings of vgg11bn_fmnist_w4a4.py
# (GPTQ rounding + the search):
#   python tools/quantize.py configs/lapq/vgg11bn_fmnist_mixed_bops-w3a3.py
_base_ = ['./vgg11bn_fmnist_w4a4.py']

quantizer = dict(
    mixed=dict(budget=dict(bops_of='w3a3'), w_candidates=(2, 3, 4, 8),
               a_candidates=(4, 8)))
