# vgg11bn_fmnist_mixed_bops-w3a3 on mmpretrain: the same config as
# configs/lapq/vgg11bn_fmnist_mixed_bops-w3a3.py (the Fashion-MNIST configs
# name no library), run in mmpretrain's scope.
#   python tools/quantize.py configs/mmpretrain/vgg11bn_fmnist_mixed_bops-w3a3.py
_base_ = ['../lapq/vgg11bn_fmnist_mixed_bops-w3a3.py']

default_scope = 'mmpretrain'
