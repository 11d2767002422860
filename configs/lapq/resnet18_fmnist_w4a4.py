# LAPQ W4A4 of mmcls's ResNet-18 trained on Fashion-MNIST
# (configs/fmnist/resnet18_fmnist.py, checkpoint committed in checkpoints/),
# with the calibration, search and evaluation settings of the VGG demo:
#   python tools/quantize.py configs/lapq/resnet18_fmnist_w4a4.py
_base_ = ['./vgg11bn_fmnist_w4a4.py']

# The backbone of configs/fmnist/resnet18_fmnist.py (mmengine forbids the
# same key in two _base_ files, so it is restated here; a test checks the
# two configs build the same model).
model = dict(
    backbone=dict(_delete_=True, type='ResNet', depth=18, num_stages=4,
                  out_indices=(3, ), style='pytorch'))
load_from = 'checkpoints/resnet18_fmnist.pth'

# The ResNet family's rounding, measured on the Fashion-MNIST ResNet-18
# (docs/reconstruction.md): QDrop block reconstruction with the activation
# steps learned in it (LSQ) at the Lp init's clips, then the search over
# the activation clips ('lapq_qdrop_lsq' in tools/benchmark.py, 3
# calibration seeds: W4A4 91.63 +- 0.16, W3A3 90.87 +- 0.14, W2A4 90.65 +-
# 0.08, against 91.41 / 90.29 / 90.48 with fixed steps, one seed).
quantizer = dict(
    rounding=dict(method='adaround', order='before_search',
                  adaround=dict(drop_prob=0.5, learn_act_steps=True)),
    search=dict(variables='activations'))
