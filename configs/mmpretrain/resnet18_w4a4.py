# The mmpretrain twin of configs/lapq/resnet18_w4a4.py
# (tests/test_engine/test_compat.py checks that both say the same).
# LAPQ W4A4 of mmpretrain's ImageNet ResNet-18, official checkpoint (69.90).
#   python tools/quantize.py configs/mmpretrain/resnet18_w4a4.py
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py',
          '../_base_/lapq_w4a4_resnet.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/resnet/'
             'resnet18_8xb32_in1k_20210831-fbbb1da6.pth')
