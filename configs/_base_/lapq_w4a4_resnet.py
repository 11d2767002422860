# LAPQ W4A4 with the ResNet family's rounding, measured on the Fashion-MNIST
# ResNet-18 (docs/reconstruction.md): QDrop block reconstruction at the Lp
# init's clips, then the search over the activation clips ('lapq_qdrop' in
# tools/benchmark.py: W4A4 91.41, W3A3 90.29, W2A4 90.48, against 91.18 /
# 89.69 / 89.45 with GPTQ in its place). Inherit it after a ResNet config.
_base_ = ['./lapq_w4a4.py']

quantizer = dict(
    rounding=dict(method='adaround', order='before_search',
                  adaround=dict(drop_prob=0.5, learn_act_steps=True)),
    search=dict(variables='activations'))
