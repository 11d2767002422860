# A DeiT-style vision transformer, mmcls's own VisionTransformer (cls token,
# learned position embedding, pre-norm encoder layers), on Fashion-MNIST:
# DeiT-Tiny's width and heads (192 dims, 3 heads of 64, MLP 768) at half its
# depth (6 layers), on the unresized 28x28 images in 4x4 patches (49 patch
# tokens and the cls token). docs/default_model.md says why this size.
#
#   python tools/train.py configs/fmnist/deit-tiny-6l_fmnist.py
_base_ = ['./vgg11bn_fmnist.py']

model = dict(
    _delete_=True,
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=192, num_layers=6, num_heads=3,
                  feedforward_channels=768),
        img_size=28,
        patch_size=4,
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=192,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                  mode='original'),
        topk=(1, )),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
    ])

# The 28x28 images as they are (no resize): 7x7 patches of 4x4 pixels.
train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmlapq.GrayToRGB'),
    dict(type='mmlapq.PackInputs'),
]
test_pipeline = [
    dict(type='mmlapq.GrayToRGB'),
    dict(type='mmlapq.PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# AdamW as DeiT trains (no weight decay on norms, biases, the position
# embedding and the cls token), one warm-up epoch, cosine to 12 epochs.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05,
                   betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0,
        custom_keys={'.pos_embed': dict(decay_mult=0.0),
                     '.cls_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=12,
         eta_min=1e-5, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=12, val_interval=3)
