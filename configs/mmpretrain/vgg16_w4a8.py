# The mmpretrain twin of configs/lapq/vgg16_w4a8.py
# (tests/test_engine/test_compat.py checks that both say the same).
# W4A8: 4-bit weights, 8-bit activations.
_base_ = ['./vgg16_w4a4.py']

quantizer = dict(w_bits=4, a_bits=8)
