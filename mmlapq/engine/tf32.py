"""TF32 on GPUs: one switch for every stage of a run (the switches
themselves live in quant/precision.py, where GPTQ uses them too).

Every stage of a run goes through ``tf32_mode(cfg.quantizer.allow_tf32)``,
so the reported FP32 and quantized top-1 and the search use the same
arithmetic; off by default, since Powell is sensitive to noise in the loss.
"""
from ..quant.precision import tf32_flags, tf32_mode

__all__ = ['tf32_flags', 'tf32_mode']
