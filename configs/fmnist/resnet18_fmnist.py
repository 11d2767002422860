# mmcls's ImageNet ResNet-18 backbone, unchanged (stride-2 stem and max
# pool: 32x32 inputs reach layer4 at 1x1), on Fashion-MNIST with the data
# pipeline, schedule, neck and 10-class head (512 inputs) of the VGG-11-BN
# demo.
#
#   python tools/train.py configs/fmnist/resnet18_fmnist.py
_base_ = ['./vgg11bn_fmnist.py']

model = dict(
    backbone=dict(_delete_=True, type='ResNet', depth=18, num_stages=4,
                  out_indices=(3, ), style='pytorch'))
