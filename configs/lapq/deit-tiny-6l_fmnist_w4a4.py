# LAPQ W4A4 of the DeiT-style ViT trained on Fashion-MNIST
# (configs/fmnist/deit-tiny-6l_fmnist.py, checkpoint committed in
# checkpoints/): every Linear and both attention products quantized, the
# softmax output at 8 bits, LayerNorm reparameterization, QDrop with
# learned activation steps per encoder layer, then the search over the
# activation clips (docs/transformers.md):
#   python tools/quantize.py configs/lapq/deit-tiny-6l_fmnist_w4a4.py
_base_ = ['../fmnist/deit-tiny-6l_fmnist.py',
          '../_base_/lapq_w4a4_settings.py']

load_from = 'checkpoints/deit-tiny-6l_fmnist.pth'

# top-5 as well, so the report has the same keys as on ImageNet.
test_evaluator = dict(type='Accuracy', topk=(1, 5))
val_evaluator = test_evaluator
test_dataloader = dict(batch_size=500, num_workers=0,
                       persistent_workers=False)
train_dataloader = dict(num_workers=0, persistent_workers=False)

quantizer = dict(
    softmax_bits=8,
    # alpha 1: each channel's range folded (RepQ-ViT); < 1: SmoothQuant's
    # balance (--cfg-options quantizer.layernorm_reparam.alpha=0.5);
    # _delete_ replaces the base settings' False
    layernorm_reparam=dict(_delete_=True, alpha=1.0),
    # 300 steps per encoder layer and 150 evaluations of the search keep
    # the run within 10 minutes on 2 CPU cores
    rounding=dict(method='adaround', order='before_search',
                  adaround=dict(iters=300, drop_prob=0.5,
                                learn_act_steps=True)),
    search=dict(variables='activations', maxiter=1, max_evals=150),
    calib=dict(num_images=512, seed=0, batch_size=128))
