# LAPQ W4A4 of mmcls's MobileNetV2 trained on Fashion-MNIST
# (configs/fmnist/mobilenet-v2_fmnist.py, checkpoint committed in
# checkpoints/), with the calibration, search and evaluation settings of the
# VGG demo:
#   python tools/quantize.py configs/lapq/mobilenet-v2_fmnist_w4a4.py
_base_ = ['./vgg11bn_fmnist_w4a4.py']

# The model of configs/fmnist/mobilenet-v2_fmnist.py (mmengine forbids the
# same key in two _base_ files, so it is restated here; a test checks the
# two configs build the same model).
model = dict(
    backbone=dict(_delete_=True, type='MobileNetV2', widen_factor=1.0),
    head=dict(in_channels=1280))
load_from = 'checkpoints/mobilenet-v2_fmnist.pth'

# The ImageNet MobileNetV2 config's settings (see there): per-channel weight
# clips, the search over every clip, nearest rounding.
quantizer = dict(
    w_per_channel=True,
    rounding=dict(method='nearest'),
    search=dict(variables='all'))
