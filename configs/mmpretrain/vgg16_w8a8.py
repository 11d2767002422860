# The mmpretrain twin of configs/lapq/vgg16_w8a8.py
# (tests/test_engine/test_compat.py checks that both say the same).
# W8A8: at 8 bits layer-wise Lp clips are nearly optimal; one Powell sweep.
_base_ = ['./vgg16_w4a4.py']

# Rounding to nearest: at 8 bits it loses nothing that GPTQ would win back.
quantizer = dict(w_bits=8, a_bits=8, search=dict(maxiter=1),
                 rounding=dict(method='nearest'))
