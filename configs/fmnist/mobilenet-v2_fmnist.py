# mmcls's ImageNet MobileNetV2 backbone (widen factor 1.0), unchanged
# (stride-2 stem: 32x32 inputs reach the last conv at 1x1), on Fashion-MNIST
# with the data pipeline, schedule and neck of the VGG-11-BN demo; the head
# takes the backbone's 1280 channels.
#
#   python tools/train.py configs/fmnist/mobilenet-v2_fmnist.py
_base_ = ['./vgg11bn_fmnist.py']

model = dict(
    backbone=dict(_delete_=True, type='MobileNetV2', widen_factor=1.0),
    head=dict(in_channels=1280))
