# LAPQ W4A4 of the embedded default model: mmcls's VGG-11-BN trained on
# Fashion-MNIST (configs/fmnist/vgg11bn_fmnist.py, checkpoint committed in
# checkpoints/). The main job of the README:
#   python tools/quantize.py configs/lapq/vgg11bn_fmnist_w4a4.py
_base_ = ['../fmnist/vgg11bn_fmnist.py', '../_base_/lapq_w4a4_settings.py']

load_from = 'checkpoints/vgg11bn_fmnist.pth'

# top-5 as well, so the report has the same keys as on ImageNet.
test_evaluator = dict(type='Accuracy', topk=(1, 5))
val_evaluator = test_evaluator
test_dataloader = dict(batch_size=500, num_workers=0,
                       persistent_workers=False)
train_dataloader = dict(num_workers=0, persistent_workers=False)

quantizer = dict(
    calib=dict(num_images=512, seed=0, batch_size=128),
    # One Powell sweep over the 18 clips fits the 5-minute budget on two
    # CPU cores; maxiter=2 (the reference's) roughly doubles the search time.
    search=dict(maxiter=1))

lapq_hooks = [
    dict(type='mmlapq.FP32EvalHook', enable=True),
    dict(type='mmlapq.CalibrationHook'),
    dict(type='mmlapq.LAPQHook', evaluate_init=True),
    dict(type='mmlapq.LAPQReportHook'),
]
