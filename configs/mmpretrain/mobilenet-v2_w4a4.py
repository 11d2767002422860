# The mmpretrain twin of configs/lapq/mobilenet-v2_w4a4.py
# (tests/test_engine/test_compat.py checks that both say the same).
# LAPQ W4A4 of mmpretrain's ImageNet MobileNetV2, official checkpoint (71.86):
#   python tools/quantize.py configs/mmpretrain/mobilenet-v2_w4a4.py
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
          '../_base_/lapq_w4a4_mobilenet-v2.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/'
             'mobilenet_v2/mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth')
