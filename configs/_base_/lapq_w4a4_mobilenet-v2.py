# LAPQ W4A4 with MobileNetV2's settings, measured on the Fashion-MNIST
# MobileNetV2 (docs/reconstruction.md): per-channel weight clips, since a
# depthwise conv's kernels differ in scale from channel to channel; QDrop
# block reconstruction with the activation steps learned in it (LSQ) at the
# Lp init's clips, then the search over the activation clips
# ('lapq_qdrop_lsq' in tools/benchmark.py, 3 calibration seeds: W4A4
# 90.68 +- 0.12, W3A3 88.26 +- 0.20, W2A4 87.25 +- 0.32, against 90.16 +-
# 0.30 / 86.97 (one seed) / 86.35 +- 0.84 with fixed steps).
# Equalization is off: with per-channel clips it cost QDrop 2.5 points at
# W2A4. Inherit it after a MobileNetV2 config.
_base_ = ['./lapq_w4a4.py']

quantizer = dict(
    w_per_channel=True,
    equalize=False,
    rounding=dict(method='adaround', order='before_search',
                  adaround=dict(drop_prob=0.5, learn_act_steps=True)),
    search=dict(variables='activations'))
