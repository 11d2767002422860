# The mmpretrain twin of configs/lapq/vgg11_w4a4.py
# (tests/test_engine/test_compat.py checks that both say the same).
# LAPQ W4A4 of mmpretrain's ImageNet VGG11, official checkpoint.
#   python tools/quantize.py configs/mmpretrain/vgg11_w4a4.py
_base_ = ['mmpretrain::vgg/vgg11_8xb32_in1k.py', '../_base_/lapq_w4a4.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/vgg/'
             'vgg11_batch256_imagenet_20210208-4271cd6c.pth')
