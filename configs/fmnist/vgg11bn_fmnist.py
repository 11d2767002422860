# VGG-11 with BN (mmcls's own VGG class) on Fashion-MNIST: the embedded
# default model of mmlapq. Gray 28x28 images are resized to 32x32 and repeated
# into three channels; the ImageNet classifier is replaced by a global average
# pool and one linear layer. The same config serves mmcls and mmpretrain
# (which names only differ: mmlapq.PackInputs packs for the library that
# runs).
#
#   python tools/prepare_fmnist.py
#   python tools/train.py configs/fmnist/vgg11bn_fmnist.py
_base_ = ['../_base_/default_runtime.py']

custom_imports = dict(imports=['mmlapq'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VGG', depth=11, norm_cfg=dict(type='BN'), num_classes=-1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, ),
    ))

# Fashion-MNIST pixel statistics (0.2860, 0.3530) x 255.
data_preprocessor = dict(
    num_classes=10, mean=[72.94] * 3, std=[90.02] * 3, to_rgb=False)

dataset_type = 'FashionMNIST'
data_root = 'data/fashion_mnist'
train_pipeline = [
    dict(type='Resize', scale=32),
    dict(type='RandomCrop', crop_size=32, padding=2),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmlapq.GrayToRGB'),
    dict(type='mmlapq.PackInputs'),
]
test_pipeline = [
    dict(type='Resize', scale=32),
    dict(type='mmlapq.GrayToRGB'),
    dict(type='mmlapq.PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_prefix=data_root,
        test_mode=False,
        download=False,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_prefix=data_root,
        test_mode=True,
        download=False,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
# One warm-up epoch, then cosine annealing with one warm restart: a cycle of 4
# epochs from lr 0.05 and a cycle of 5 epochs from 0.02 (10 epochs in all).
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineRestartLR', by_epoch=True, begin=1, end=10,
         periods=[4, 5], restart_weights=[1.0, 0.4], eta_min=0.0,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=5)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2),
)
randomness = dict(seed=0, deterministic=False)
