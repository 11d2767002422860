# resnet18_fmnist_mixed_bops-w4a4 on mmpretrain: the same config as
# configs/lapq/resnet18_fmnist_mixed_bops-w4a4.py (the Fashion-MNIST configs name
# no library), run in mmpretrain's scope.
#   python tools/quantize.py configs/mmpretrain/resnet18_fmnist_mixed_bops-w4a4.py
_base_ = ['../lapq/resnet18_fmnist_mixed_bops-w4a4.py']

default_scope = 'mmpretrain'
