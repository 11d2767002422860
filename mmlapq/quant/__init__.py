"""Quantization core in pure PyTorch: grids, quantized layers, wrapping,
BN folding, clip initialisers and bias correction. No mmengine import."""
from .bias_correction import empirical_bias_correction
from .bn_fold import fold_batch_norms, fold_bn_into_conv
from .clip_init import (INIT_METHODS, WeightClipper, activation_clip,
                        aciq_factor, lp_clip_histogram, lp_clip_tensor)
from .control import (clips_applied, get_clips, quant_layers, quantization_disabled,
                      quantizers, set_clips, set_quant_enabled)
from .grids import GRID_KINDS, MAX_BITS, MIN_BITS, Grid, check_bits
from .histogram import AbsHistogram
from .qmodules import QuantConv2d, QuantLinear, TensorQuantizer
from .wrap import (LayerPlan, QuantSettings, conv_output_names, plan_layers,
                   quantize_model)

__all__ = [
    'Grid', 'GRID_KINDS', 'MIN_BITS', 'MAX_BITS', 'check_bits',
    'AbsHistogram', 'TensorQuantizer', 'QuantConv2d', 'QuantLinear',
    'QuantSettings', 'LayerPlan', 'plan_layers', 'quantize_model',
    'conv_output_names',
    'fold_batch_norms', 'fold_bn_into_conv', 'INIT_METHODS', 'WeightClipper',
    'activation_clip', 'aciq_factor', 'lp_clip_histogram', 'lp_clip_tensor',
    'quant_layers', 'quantizers', 'get_clips', 'set_clips',
    'set_quant_enabled', 'quantization_disabled', 'empirical_bias_correction',
    'clips_applied'
]
