# The mmpretrain twin of configs/lapq/vgg13bn_w4a4.py
# (tests/test_engine/test_compat.py checks that both say the same).
# LAPQ W4A4 of mmpretrain's ImageNet VGG13-BN, official checkpoint.
#   python tools/quantize.py configs/mmpretrain/vgg13bn_w4a4.py
_base_ = ['mmpretrain::vgg/vgg13bn_8xb32_in1k.py', '../_base_/lapq_w4a4.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/vgg/'
             'vgg13_bn_batch256_imagenet_20210207-1a8b7864.pth')
