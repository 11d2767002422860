# LAPQ W4A4 of mmcls's ImageNet ResNet-50, official checkpoint (76.55).
#   python tools/quantize.py configs/lapq/resnet50_w4a4.py
_base_ = ['mmcls::resnet/resnet50_8xb32_in1k.py',
          '../_base_/lapq_w4a4_resnet.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/resnet/'
             'resnet50_8xb32_in1k_20210831-ea4938fc.pth')
