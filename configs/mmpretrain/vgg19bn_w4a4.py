# The mmpretrain twin of configs/lapq/vgg19bn_w4a4.py
# (tests/test_engine/test_compat.py checks that both say the same).
# LAPQ W4A4 of mmpretrain's ImageNet VGG19-BN, official checkpoint.
#   python tools/quantize.py configs/mmpretrain/vgg19bn_w4a4.py
_base_ = ['mmpretrain::vgg/vgg19bn_8xb32_in1k.py', '../_base_/lapq_w4a4.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/vgg/'
             'vgg19_bn_batch256_imagenet_20210208-da620c4f.pth')
