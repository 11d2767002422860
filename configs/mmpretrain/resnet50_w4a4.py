# The mmpretrain twin of configs/lapq/resnet50_w4a4.py
# (tests/test_engine/test_compat.py checks that both say the same).
# LAPQ W4A4 of mmpretrain's ImageNet ResNet-50, official checkpoint (76.55).
#   python tools/quantize.py configs/mmpretrain/resnet50_w4a4.py
_base_ = ['mmpretrain::resnet/resnet50_8xb32_in1k.py', '../_base_/lapq_w4a4.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/resnet/'
             'resnet50_8xb32_in1k_20210831-ea4938fc.pth')

# The ResNet family's rounding, measured on the Fashion-MNIST ResNet-18
# (docs/reconstruction.md): QDrop block reconstruction at the Lp init's
# clips, then the search over the activation clips ('lapq_qdrop' in
# tools/benchmark.py: W4A4 91.41, W3A3 90.29, W2A4 90.48, against 91.18 /
# 89.69 / 89.45 with GPTQ in its place).
quantizer = dict(
    rounding=dict(method='adaround', order='before_search',
                  adaround=dict(drop_prob=0.5)),
    search=dict(variables='activations'))
