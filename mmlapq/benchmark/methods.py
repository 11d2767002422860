"""The benchmark's methods: each a set of overrides of the config's
quantizer (init, search, rounding, and a few quantizer settings), so that
every method runs the same pipeline as a run (``LAPQQuantizer.quantize``)
from the same FP32 weights and calibration images."""
import copy
from typing import Optional, Tuple

from ..engine.errors import LAPQError
from ..lapq.mixed import split_width
from ..registry import MODELS as LAPQ_MODELS

# name -> (init overrides, search overrides, rounding overrides)
_NEAREST = dict(method='nearest')


def _reconstruction(drop_prob: float, learn_act_steps: bool = False,
                    fisher: bool = False) -> dict:
    """The block reconstruction's settings that a method's name fixes,
    whatever the config says (QDrop's drops, learned steps, Fisher)."""
    return dict(drop_prob=drop_prob, learn_act_steps=learn_act_steps,
                fisher=fisher)


METHODS = {
    'max': (dict(method='max'), dict(method='none'), _NEAREST),
    'l2': (dict(method='lp', p=2.0), dict(method='none'), _NEAREST),
    'l3': (dict(method='lp', p=3.0), dict(method='none'), _NEAREST),
    'aciq': (dict(method='aciq'), dict(method='none'), _NEAREST),
    'lp': (dict(method='lp', p=None), dict(method='none'), _NEAREST),
    'cd': (dict(method='lp', p=None), dict(method='coordinate'), _NEAREST),
    'lapq': (dict(method='lp', p=None), dict(method='powell', variables='all'),
             _NEAREST),
    # the Lp init's clips, GPTQ rounding, no joint search
    'gptq': (dict(method='lp', p=None), dict(method='none'),
             dict(method='gptq', order='before_search')),
    # the two orders of LAPQ + GPTQ compared in README
    'lapq_gptq_after': (dict(method='lp', p=None),
                        dict(method='powell', variables='all'),
                        dict(method='gptq', order='after_search')),
    'lapq_gptq_before_all': (dict(method='lp', p=None),
                             dict(method='powell', variables='all'),
                             dict(method='gptq', order='before_search')),
    # The combination chosen by measurement (docs/rounding.md): GPTQ at the
    # Lp init's clips, then the search over the activation clips.
    'lapq_gptq': (dict(method='lp', p=None),
                  dict(method='powell', variables='activations'),
                  dict(method='gptq', order='before_search')),
    # Equalization, then GPTQ at the Lp init's clips (Brevitas's recipe)
    'cle_gptq': (dict(method='lp', p=None), dict(method='none'),
                 dict(method='gptq', order='before_search')),
    # Block reconstruction at the Lp init's clips, no joint search:
    # AdaRound (activations quantized in the block) and QDrop (dropped at
    # random with probability 0.5)
    'adaround': (dict(method='lp', p=None), dict(method='none'),
                 dict(method='adaround', adaround=_reconstruction(0.0))),
    'qdrop': (dict(method='lp', p=None), dict(method='none'),
              dict(method='adaround', adaround=_reconstruction(0.5))),
    # LAPQ with block reconstruction (docs/reconstruction.md), the order
    # measured best: QDrop at the Lp init's clips, then the search over the
    # activation clips
    'lapq_qdrop': (dict(method='lp', p=None),
                   dict(method='powell', variables='activations'),
                   dict(method='adaround', order='before_search',
                        adaround=_reconstruction(0.5))),
    # lapq_qdrop with every activation step learned in the blocks (LSQ)
    'lapq_qdrop_lsq': (dict(method='lp', p=None),
                       dict(method='powell', variables='activations'),
                       dict(method='adaround', order='before_search',
                            adaround=_reconstruction(0.5, True))),
    # lapq_qdrop_lsq with BRECQ's Fisher-weighted block loss
    'lapq_qdrop_lsq_fisher': (dict(method='lp', p=None),
                              dict(method='powell', variables='activations'),
                              dict(method='adaround', order='before_search',
                                   adaround=_reconstruction(0.5, True,
                                                            True))),
    # the same after equalization
    'lapq_cle_qdrop': (dict(method='lp', p=None),
                       dict(method='powell', variables='activations'),
                       dict(method='adaround', order='before_search',
                            adaround=_reconstruction(0.5))),
    # the other order: equalization, the search over every clip, QDrop at
    # its clips, a second search over the activation clips
    'lapq_cle_qdrop_between': (dict(method='lp', p=None),
                               dict(method='powell', variables='all'),
                               dict(method='adaround',
                                    order='between_searches',
                                    adaround=_reconstruction(0.5))),
}
# Mixed precision (lapq/mixed/) at the BOPs of the row's uniform width,
# then the config's own init, search and rounding (QDrop for the ResNet and
# MobileNetV2 configs, GPTQ for VGG); the candidates are the config's
# quantizer.mixed ones, or the defaults. 'config' is the same without
# mixed precision: the uniform row to compare with.
METHODS['lapq_mixed'] = (dict(), dict(), dict())
METHODS['config'] = (dict(), dict(), dict())
MIXED_METHODS = ('lapq_mixed', )
# Quantizer settings a method sets whatever the config says.
METHOD_QUANT = {
    'cle_gptq': dict(equalize=True),
    'adaround': dict(equalize=False),
    'qdrop': dict(equalize=False),
    'lapq_qdrop': dict(equalize=False),
    'lapq_qdrop_lsq': dict(equalize=False),
    'lapq_qdrop_lsq_fisher': dict(equalize=False),
    'lapq_cle_qdrop': dict(equalize=True),
    'lapq_cle_qdrop_between': dict(equalize=True),
}
DEFAULT_METHODS = ('max', 'l2', 'l3', 'aciq', 'lp', 'lapq')
DEFAULT_BITS = ('w8a8', 'w4a8', 'w4a4', 'w3a3', 'w2a4')


def parse_bits(text: str) -> Tuple[int, int]:
    """'w4a8' -> (4, 8)."""
    width = split_width(text)
    if width is None:
        raise LAPQError(f'bit widths {text!r} are not of the form w4a8')
    return width


def make_quantizer(quantizer_cfg: dict, method: str, w_bits: int,
                   a_bits: int, max_evals: Optional[int] = None,
                   seed: Optional[int] = None):
    init, search, rounding = METHODS[method]
    cfg = copy.deepcopy(dict(quantizer_cfg))
    cfg.update(w_bits=w_bits, a_bits=a_bits, **METHOD_QUANT.get(method, {}))
    if seed is not None:  # recorded in the settings; the images are given
        cfg['calib'] = dict(cfg.get('calib', {}), seed=seed)
    cfg['init'] = dict(cfg.get('init', {}), **init)
    cfg['search'] = dict(cfg.get('search', {}), **search)
    cfg['rounding'] = _merged(cfg.get('rounding', {}), rounding)
    if rounding and rounding.get('method') != 'adaround':
        # a method that does not reconstruct carries none of the config's
        # reconstruction settings (a ResNet config learns steps)
        cfg['rounding'].pop('adaround', None)
    if max_evals is not None:
        cfg['search']['max_evals'] = max_evals
    if method in MIXED_METHODS:
        cfg['mixed'] = dict(cfg.get('mixed') or {},
                            budget=dict(bops_of=f'w{w_bits}a{a_bits}'))
    else:
        cfg.pop('mixed', None)  # a uniform method on a mixed config
    return LAPQ_MODELS.build(cfg)


def _merged(base: dict, override: dict) -> dict:
    """``override`` over ``base``, one level of nested dicts merged (a
    method's adaround settings over the config's)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = dict(out.get(key) or {}, **value) \
            if isinstance(value, dict) else value
    return out
