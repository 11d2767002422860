# deit-tiny-6l_fmnist_w4a4 on mmpretrain: the same config as
# configs/lapq/deit-tiny-6l_fmnist_w4a4.py (the Fashion-MNIST configs name
# no library), run in mmpretrain's scope.
#   python tools/quantize.py configs/mmpretrain/deit-tiny-6l_fmnist_w4a4.py
_base_ = ['../lapq/deit-tiny-6l_fmnist_w4a4.py']

default_scope = 'mmpretrain'
