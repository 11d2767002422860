# LAPQ W4A4 settings and stages. Inherit configs/_base_/lapq_w4a4.py (this
# plus custom_imports) after a model's config; inherit this file directly when
# the model's config already imports mmlapq. Every key is documented in
# docs/config.md.

quantizer = dict(
    type='mmlapq.LAPQQuantizer',
    w_bits=4,
    a_bits=4,
    w_grid='signed',          # 'signed' (INT, exact zero) | 'midrise'
    w_per_channel=False,
    a_signed='auto',          # signed grid for inputs seen negative
    layer_types=['Conv2d', 'Linear'],
    include=['*'],            # fnmatch patterns on module names
    exclude=[],
    first_last='8bit',        # '8bit' | 'fp' | 'same'
    overrides={},             # {'pattern': dict(w_bits=8, a_bits='fp')}
    fold_bn=True,
    bias_correction='none',   # 'none' | 'mean' (reference -bcw) | 'empirical'
    preset=None,              # 'reference': the reference code's layer set
    # 'integer': what onnxruntime's / OpenVINO's integer kernels compute
    # (int32 biases, quantized pools and residual adds; docs/deployment.md);
    # 'fake_quant': float biases, layer inputs only (the paper's simulation)
    target='integer',
    add_bits=8,               # residual adds' operands (integer target)
    shortcut_bits=8,          # residual shortcuts; None: the conv's codes
    # Cross-layer equalization of the float model before quantizing
    # (True, or dict(max_iters=100, tol=1e-4, relu6='relu',
    # absorb_bias=False)); docs/reconstruction.md
    equalize=False,
    # Transformers (docs/transformers.md): the attention products of
    # mmcls's / mmpretrain's MultiheadAttention on quantized operands, the
    # softmax output at softmax_bits (None: a_bits); the LayerNorm
    # reparameterization (True, or dict(alpha=1.0, rtol=1e-4))
    attention_matmuls=True,
    softmax_bits=None,
    layernorm_reparam=False,
    init=dict(
        method='lp',          # 'lp' | 'max' | 'aciq' | 'percentile'
        mode='sequential',    # 'sequential' | 'independent'
        p=None,               # None: choose p on p_grid by the loss
        p_grid=[2.0, 2.2222, 2.4444, 2.6667, 2.8889, 3.1111, 3.3333,
                3.5556, 3.7778, 4.0]),
    # How weights take their grid points: GPTQ at the Lp init's clips, then
    # the joint search over the activation clips (docs/rounding.md: the
    # best of the orders measured at 4 bits and below). method='nearest' is
    # LAPQ as published; use it at 8 bits.
    rounding=dict(
        method='gptq',        # 'nearest' | 'gptq' | 'adaround'
        # 'before_search' | 'after_search' | 'between_searches'
        order='before_search',
        gptq=dict(damp=0.01, block_size=128, act_order=False,
                  max_columns=8192),
        # block reconstruction (docs/reconstruction.md); drop_prob=0.5 is
        # QDrop; learn_act_steps learns the activation steps in the blocks
        # (LSQ); fisher weights the block loss (BRECQ; measured worse)
        adaround=dict(iters=500, batch_size=32, lr=0.01, reg_weight=0.01,
                      warmup=0.2, beta_start=20.0, beta_end=2.0,
                      drop_prob=0.0, seed=0, learn_act_steps=False,
                      act_lr=0.001, fisher=False)),
    search=dict(
        method='powell',      # 'powell' | 'coordinate' | 'none'
        maxiter=2,
        max_evals=None,
        variables='auto'),    # 'auto' | 'all' | 'activations'
    # holdout_images: a second seeded draw the search never optimises; it
    # keeps the search from fitting the calibration images (0: off).
    calib=dict(num_images=512, seed=0, batch_size=64, holdout_images=512),
)

# The LAPQ stages. Not `custom_hooks`, which many stock configs set (an
# EMAHook, say) and which mmengine refuses to take from two bases: the tools
# append these to whatever `custom_hooks` the model's config has
# (mmlapq/engine/config.py).
lapq_hooks = [
    dict(type='mmlapq.FP32EvalHook', enable=True),
    dict(type='mmlapq.CalibrationHook'),
    dict(type='mmlapq.LAPQHook', evaluate_init=False),
    dict(type='mmlapq.LAPQReportHook'),
]
