# LAPQ W4A4 of mmcls's ImageNet MobileNetV2, official checkpoint (71.86):
#   python tools/quantize.py configs/lapq/mobilenet-v2_w4a4.py
_base_ = ['mmcls::mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
          '../_base_/lapq_w4a4_mobilenet-v2.py']

load_from = ('https://download.openmmlab.com/mmclassification/v0/'
             'mobilenet_v2/mobilenet_v2_batch256_imagenet_20200708-3b2dc3af.pth')
