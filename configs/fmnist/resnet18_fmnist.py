# mmcls's ImageNet ResNet-18 backbone, unchanged (stride-2 stem and max
# pool: 32x32 inputs reach layer4 at 1x1), on Fashion-MNIST with the data
# pipeline and schedule of the VGG-11-BN demo; only the head is 10-class.
#
#   python tools/train.py configs/fmnist/resnet18_fmnist.py
_base_ = ['./vgg11bn_fmnist.py']

model = dict(
    _delete_=True,
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ),
                  style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ))
