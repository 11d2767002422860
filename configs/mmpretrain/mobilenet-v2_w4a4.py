# The mmpretrain twin of configs/lapq/mobilenet-v2_w4a4.py
# (tests/test_engine/test_compat.py checks that both say the same).
# LAPQ W4A4 of mmpretrain's ImageNet MobileNetV2, official checkpoint (71.86):
#   python tools/quantize.py configs/mmpretrain/mobilenet-v2_w4a4.py
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
          '../_base_/lapq_w4a4.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/'
             'mobilenet_v2/mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth')

# MobileNetV2's settings, measured on the Fashion-MNIST MobileNetV2
# (docs/reconstruction.md): per-channel weight clips, since a depthwise
# conv's kernels differ in scale from channel to channel; QDrop block
# reconstruction at the Lp init's clips, then the search over the activation
# clips ('lapq_qdrop' in tools/benchmark.py: W4A4 90.16 +- 0.30 over 3
# seeds, W3A3 86.97, W2A4 86.35 +- 0.84, against 89.26 / 82.29 / 37.38
# with the search over every clip and nearest rounding). Equalization is off: with per-channel clips it cost
# QDrop 2.5 points at W2A4.
quantizer = dict(
    w_per_channel=True,
    equalize=False,
    rounding=dict(method='adaround', order='before_search',
                  adaround=dict(drop_prob=0.5)),
    search=dict(variables='activations'))
