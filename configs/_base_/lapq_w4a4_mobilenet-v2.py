# LAPQ W4A4 with MobileNetV2's settings, measured on the Fashion-MNIST
# MobileNetV2 (docs/reconstruction.md): per-channel weight clips, since a
# depthwise conv's kernels differ in scale from channel to channel; QDrop
# block reconstruction at the Lp init's clips, then the search over the
# activation clips ('lapq_qdrop' in tools/benchmark.py: W4A4 90.16 +- 0.30
# over 3 seeds, W3A3 86.97, W2A4 86.35 +- 0.84, against 89.26 / 82.29 /
# 37.38 with the search over every clip and nearest rounding).
# Equalization is off: with per-channel clips it cost QDrop 2.5 points at
# W2A4. Inherit it after a MobileNetV2 config.
_base_ = ['./lapq_w4a4.py']

quantizer = dict(
    w_per_channel=True,
    equalize=False,
    rounding=dict(method='adaround', order='before_search',
                  adaround=dict(drop_prob=0.5, learn_act_steps=True)),
    search=dict(variables='activations'))
