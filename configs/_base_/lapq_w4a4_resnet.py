# LAPQ W4A4 with the ResNet family's rounding, measured on the Fashion-MNIST
# ResNet-18 (docs/reconstruction.md): QDrop block reconstruction with the
# activation steps learned in it (LSQ) at the Lp init's clips, then the
# search over the activation clips ('lapq_qdrop_lsq' in tools/benchmark.py,
# 3 calibration seeds: W4A4 91.63 +- 0.16, W3A3 90.87 +- 0.14, W2A4 90.65
# +- 0.08, against 91.41 / 90.29 / 90.48 with fixed steps, one seed).
# Inherit it after a ResNet config.
_base_ = ['./lapq_w4a4.py']

quantizer = dict(
    rounding=dict(method='adaround', order='before_search',
                  adaround=dict(drop_prob=0.5, learn_act_steps=True)),
    search=dict(variables='activations'))
