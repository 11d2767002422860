"""Benchmarks on one model and one calibration set, in one process.

- speed: seconds of one plain FP32 forward over the calibration set against
  the mean seconds of one loss evaluation during the Powell phase
  (``eval_cost_ratio``; below 1 means an evaluation is cheaper than a
  forward, thanks to cached weights and the chain's prefix cache).
- methods: every layer-wise baseline and LAPQ at several bit widths, from
  the same FP32 weights and the same calibration set, scored on the test set
  with mmcls's Accuracy.
"""
import copy
import datetime
import logging
import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..lapq import CalibrationSet
from ..registry import MODELS as LAPQ_MODELS
from ..report import (benchmark_markdown, plot_loss_surface, plot_run,
                      seed_summary)
from .calibration import build_calibration_set
from .chain import classifier_logits
from .checkpoint import load_float_checkpoint
from .compat import init_scope
from .env import collect_run_env
from .errors import LAPQError
from .evaluation import evaluate, metrics_top
from .report_builder import dump_json
from .run_state import unwrap
from .tf32 import tf32_mode

# name -> (init overrides, search overrides, rounding overrides)
_NEAREST = dict(method='nearest')
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
                 dict(method='adaround', adaround=dict(drop_prob=0.0))),
    'qdrop': (dict(method='lp', p=None), dict(method='none'),
              dict(method='adaround', adaround=dict(drop_prob=0.5))),
    # LAPQ with block reconstruction (docs/reconstruction.md), the order
    # measured best: QDrop at the Lp init's clips, then the search over the
    # activation clips
    'lapq_qdrop': (dict(method='lp', p=None),
                   dict(method='powell', variables='activations'),
                   dict(method='adaround', order='before_search',
                        adaround=dict(drop_prob=0.5))),
    # the same after equalization
    'lapq_cle_qdrop': (dict(method='lp', p=None),
                       dict(method='powell', variables='activations'),
                       dict(method='adaround', order='before_search',
                            adaround=dict(drop_prob=0.5))),
    # the other order: equalization, the search over every clip, QDrop at
    # its clips, a second search over the activation clips
    'lapq_cle_qdrop_between': (dict(method='lp', p=None),
                               dict(method='powell', variables='all'),
                               dict(method='adaround',
                                    order='between_searches',
                                    adaround=dict(drop_prob=0.5))),
}
# Quantizer settings a method sets whatever the config says.
METHOD_QUANT = {
    'cle_gptq': dict(equalize=True),
    'adaround': dict(equalize=False),
    'qdrop': dict(equalize=False),
    'lapq_qdrop': dict(equalize=False),
    'lapq_cle_qdrop': dict(equalize=True),
    'lapq_cle_qdrop_between': dict(equalize=True),
}
DEFAULT_METHODS = ('max', 'l2', 'l3', 'aciq', 'lp', 'lapq')
DEFAULT_BITS = ('w8a8', 'w4a8', 'w4a4', 'w3a3', 'w2a4')


def parse_bits(text: str) -> Tuple[int, int]:
    """'w4a8' -> (4, 8)."""
    import re
    m = re.fullmatch(r'w(\d+)a(\d+)', text.lower())
    if not m:
        from .errors import LAPQError
        raise LAPQError(f'bit widths {text!r} are not of the form w4a8')
    return int(m.group(1)), int(m.group(2))


def build_runner(cfg, work_dir: str, checkpoint: Optional[str],
                 test_images: Optional[int] = None):
    """An mmengine Runner of ``cfg`` for the benchmark: its float model
    loaded strictly from ``checkpoint``, its test dataloader (the first
    ``test_images`` images) and evaluator; the LAPQ hooks left out."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.work_dir, cfg.load_from, cfg.custom_hooks = work_dir, None, []
    init_scope(cfg)
    if test_images is not None:
        cfg.test_dataloader.dataset.indices = int(test_images)
    runner = Runner.from_cfg(cfg)
    if checkpoint:
        load_float_checkpoint(unwrap(runner.model), checkpoint)
    unwrap(runner.model).eval()
    return runner


def accuracy(runner, model: nn.Module, what: str) -> Dict[str, float]:
    """top-1 / top-5 (percent) of ``model`` with the runner's evaluator."""
    return metrics_top(evaluate(runner, what, model))


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
    if max_evals is not None:
        cfg['search']['max_evals'] = max_evals
    return LAPQ_MODELS.build(cfg)


def _merged(base: dict, override: dict) -> dict:
    """``override`` over ``base``, one level of nested dicts merged (a
    method's adaround settings over the config's)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = dict(out.get(key) or {}, **value) \
            if isinstance(value, dict) else value
    return out


def calibration(cfg, model, num_images: Optional[int] = None,
                logger=None, seed: Optional[int] = None
                ) -> Tuple[CalibrationSet, dict]:
    """The calibration (and held-out) images of the config, or of another
    ``seed`` (the held-out images are drawn with seed + 1, as in a run)."""
    from .quantizer import CALIB_DEFAULTS
    calib_cfg = dict(CALIB_DEFAULTS, **cfg.quantizer.get('calib', {}))
    num = num_images or calib_cfg['num_images']
    return build_calibration_set(cfg, model, num,
                                 calib_cfg['seed'] if seed is None else seed,
                                 calib_cfg['batch_size'], logger,
                                 holdout_images=calib_cfg['holdout_images'])


def speed_benchmark(cfg, float_model: nn.Module, calib: CalibrationSet,
                    max_evals: Optional[int] = None, repeats: int = 3,
                    logger: Optional[logging.Logger] = None) -> dict:
    """FP32 forward of the calibration set vs. one Powell-phase evaluation,
    averaged over a whole Powell sweep (its first evaluations, on the early
    layers, cost the most), both in the run's memory format."""
    q = cfg.quantizer
    quantizer = make_quantizer(q, 'lapq', q.get('w_bits', 4),
                               q.get('a_bits', 4), max_evals)
    quantizer.search.maxiter = 1
    float_model = quantizer.prepare(copy.deepcopy(float_model),
                                    calib.inputs[0])
    calib = quantizer.prepare_calibration(calib)
    with torch.no_grad():
        classifier_logits(float_model, calib.inputs[0])  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for x in calib.inputs:
                classifier_logits(float_model, x)
            times.append(time.perf_counter() - t0)
    fp32 = sorted(times)[len(times) // 2]
    _, result = quantizer.quantize(float_model, calib, logger)
    per_eval = result.search.seconds / max(result.search.func_evals, 1)
    return dict(fp32_forward_s=fp32, eval_s=per_eval,
                func_evals=result.search.func_evals,
                num_images=calib.num_images,
                w_bits=quantizer.quant.w_bits, a_bits=quantizer.quant.a_bits,
                channels_last=quantizer.state.channels_last,
                eval_cost_ratio=per_eval / fp32)


def methods_benchmark(cfg, runner, calib: CalibrationSet,
                      methods: Sequence[str],
                      bits: Sequence[Tuple[int, int]],
                      max_evals: Optional[int] = None,
                      logger: Optional[logging.Logger] = None,
                      plot_dir: Optional[str] = None,
                      plot_format: str = 'png',
                      seed: Optional[int] = None) -> List[dict]:
    """One row per (bit width, method), all from ``float_model`` and the same
    calibration set (drawn with ``seed``, recorded in each row); with
    ``plot_dir``, the plots of each LAPQ run go there as w{W}a{A}_p_sweep,
    _search_loss and _clips. Every model is scored with the runner's test
    dataloader and evaluator."""
    float_model = unwrap(runner.model)
    rows = [dict(method='fp32', w_bits=32, a_bits=32,
                 **accuracy(runner, float_model, 'FP32'), calib_loss=None,
                 func_evals=0, seconds=0.0, seed=seed)]
    from ..quant import clips_applied

    # The 'lp' row is LAPQ's starting point: read it off the LAPQ run (same
    # p sweep, same clips) instead of repeating the sweep.
    lp_from_lapq = 'lp' in methods and 'lapq' in methods
    for w_bits, a_bits in bits:
        for method in methods:
            if method == 'lp' and lp_from_lapq:
                continue
            model = copy.deepcopy(float_model)
            quantizer = make_quantizer(cfg.quantizer, method, w_bits, a_bits,
                                       max_evals, seed)
            t0 = time.perf_counter()
            _, result = quantizer.quantize(model, calib, logger)
            seconds = time.perf_counter() - t0
            name = f'W{w_bits}A{a_bits} {method}'
            row = dict(method=method, w_bits=w_bits, a_bits=a_bits,
                       **accuracy(runner, model, name),
                       calib_loss=result.final_loss,
                       init_calib_loss=result.init_loss,
                       # the search's lowest loss, whatever the guard kept
                       search_min_loss=min(result.search.history),
                       guard=result.search.guard,
                       p=result.p_star, func_evals=result.func_evals,
                       seconds=seconds, seed=seed)
            rows.append(row)
            if method == 'lapq' and plot_dir:
                plot_run(result, plot_dir, f'w{w_bits}a{a_bits}_',
                         plot_format)
            if method == 'lapq' and lp_from_lapq:
                with clips_applied(model, result.init_clips):
                    lp_accuracy = accuracy(runner, model,
                                           f'W{w_bits}A{a_bits} lp')
                rows.insert(len(rows) - 1, dict(
                    method='lp', w_bits=w_bits, a_bits=a_bits,
                    **lp_accuracy, calib_loss=result.init_loss,
                    init_calib_loss=result.init_loss, p=result.p_star,
                    func_evals=0, seconds=result.seconds['init'], seed=seed))
            if logger:
                logger.info(f"W{w_bits}A{a_bits} {method}: top-1 "
                            f"{row['top1']:.2f}, loss {row['calib_loss']:.4f}"
                            f", {row['func_evals']} evals, {seconds:.1f} s")
    return rows


def loss_surface(cfg, float_model: nn.Module, calib: CalibrationSet,
                 bits: int, names: Optional[Sequence[str]] = None,
                 points: int = 9, span: Tuple[float, float] = (0.4, 1.6),
                 logger=None) -> dict:
    """Calibration loss over a grid of two clips (multiples of their Lp
    init) with every other clip at its Lp init: the paper's figure 1."""
    import numpy as np

    from ..lapq import CalibrationObjective
    from ..lapq.initialize import ClipInitializer
    from .chain import build_chain
    model = copy.deepcopy(float_model)
    quantizer = make_quantizer(cfg.quantizer, 'l2', bits, bits)
    quantizer.wrap(model)
    objective = CalibrationObjective(build_chain(model, calib.inputs[0]),
                                     calib, model=model)
    ClipInitializer(objective, quantizer.init)(quantizer.init.p)
    if names is None:  # the weights of two adjacent inner layers
        weights = [n for n in objective.quantizers if n.endswith('.weight')]
        mid = len(weights) // 2
        names = weights[mid - 1:mid + 1]
    q1, q2 = (objective.quantizers[n] for n in names)
    a1, a2 = q1.alpha.clone(), q2.alpha.clone()
    grid = np.linspace(span[0], span[1], points)
    loss = np.zeros((points, points))
    for j, v in enumerate(grid):  # rows: second clip (contourf convention)
        q2.set_alpha(a2 * float(v))
        for i, u in enumerate(grid):
            q1.set_alpha(a1 * float(u))
            loss[j, i] = objective.loss()
    if logger:
        logger.info(f'loss surface at {bits} bit over {names}: '
                    f'{loss.min():.4f}..{loss.max():.4f}')
    return dict(bits=bits, names=list(names), u=grid.tolist(),
                v=grid.tolist(), loss=loss.tolist())


# The CI gate of ``tools/benchmark.py --quick`` (128 calibration images,
# 1000 test images, 120 evaluations). Measured on 2026-11-28 (2 CPU
# threads): W4A4 lp init loss 0.1512 -> LAPQ 0.1307 (13.6% lower), top-1
# 93.50 vs FP32 94.40; W3A3 0.2276 -> 0.1835 (19.4% lower), 91.80 vs 94.40.
# The loss is the search's lowest calibration loss: the held-out guard may
# rightly keep the start, but the search itself must still find lower
# losses. The margins leave room for another machine's float rounding, and
# trip when the search stops improving on its init (a search that returns
# its starting point gives 0%) or the quantized model breaks.
# {(w_bits, a_bits): (min relative loss drop below the Lp init,
#                     max top-1 points below FP32)}
QUICK_GATE = {(4, 4): (0.05, 2.0), (3, 3): (0.10, 4.0)}


def quick_gate(rows: List[dict]) -> List[str]:
    """What the quick benchmark's rows fail of :data:`QUICK_GATE` (and any
    NaN top-1); an empty list when everything passes."""
    import math
    problems = [f"W{r['w_bits']}A{r['a_bits']} {r['method']}: top-1 is NaN"
                for r in rows if r['top1'] is None or math.isnan(r['top1'])]
    fp32 = next(r['top1'] for r in rows if r['method'] == 'fp32')
    for r in rows:
        gate = QUICK_GATE.get((r['w_bits'], r['a_bits']))
        if r['method'] != 'lapq' or gate is None:
            continue
        min_drop, max_points = gate
        name = f"W{r['w_bits']}A{r['a_bits']} lapq"
        searched = r.get('search_min_loss', r['calib_loss'])
        drop = 1 - searched / r['init_calib_loss']
        if drop < min_drop:
            problems.append(
                f"{name}: the search's lowest calibration loss "
                f"{searched:.4f} is only {100 * drop:.1f}% below its Lp "
                f"init's {r['init_calib_loss']:.4f} (needs "
                f"{100 * min_drop:.0f}%)")
        if r['top1'] < fp32 - max_points:
            problems.append(f"{name}: top-1 {r['top1']:.2f} is more than "
                            f"{max_points} points below FP32's {fp32:.2f}")
    missing = [wa for wa in QUICK_GATE if not any(
        r['method'] == 'lapq' and (r['w_bits'], r['a_bits']) == wa
        for r in rows)]
    problems += [f'W{w}A{a} lapq: no row to check' for w, a in missing]
    return problems


# What ``--quick`` runs (the CI job): a small grid on a slice of the data.
QUICK = dict(methods=['max', 'l2', 'lp', 'lapq'], bits=['w4a4', 'w3a3'],
             calib_images=128, test_images=1000, max_evals=120)


@dataclass
class BenchmarkOptions:
    """What ``tools/benchmark.py`` asked for (None: the kind's default)."""
    config: str
    kind: str = 'full'  # 'full' | 'quick' | 'speed'
    checkpoint: Optional[str] = None
    methods: Optional[List[str]] = None
    bits: Optional[List[str]] = None
    out: Optional[str] = None
    calib_images: Optional[int] = None
    test_images: Optional[int] = None
    max_evals: Optional[int] = None
    plot_format: str = 'png'
    surface: bool = True
    # Calibration draws: seeds 0..seeds-1 (None: the config's seed only).
    seeds: Optional[int] = None

    def __post_init__(self):
        self.out = self.out or osp.join('work_dirs', 'benchmark' + (
            '' if self.kind == 'full' else f'_{self.kind}'))

    @property
    def defaults(self) -> dict:
        return QUICK if self.kind == 'quick' else dict(
            methods=list(DEFAULT_METHODS), bits=list(DEFAULT_BITS))

    def get(self, name: str):
        value = getattr(self, name)
        return self.defaults.get(name) if value is None else value


def run_benchmark(cfg, opts: BenchmarkOptions) -> dict:
    """Run the benchmark ``opts`` asks for on ``cfg``, under the config's
    TF32 setting, and write its files into ``opts.out``. Returns what the
    tool prints: ``text`` and, for the quick kind, the gate's ``problems``.
    """
    from mmengine.logging import MMLogger
    init_scope(cfg)
    logger = MMLogger.get_instance('mmlapq_benchmark', log_level='INFO')
    methods = opts.get('methods')
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise LAPQError(f'unknown methods {unknown}: use '
                        f'{", ".join(METHODS)}')
    bits = [parse_bits(b) for b in opts.get('bits')]
    checkpoint = opts.checkpoint or cfg.get('load_from')
    with tf32_mode(cfg.quantizer.get('allow_tf32', False)):
        # The Runner's own log and config go to OUT/logs.
        runner = build_runner(cfg, osp.join(opts.out, 'logs'), checkpoint,
                              opts.get('test_images'))
        model = unwrap(runner.model)
        if opts.kind == 'speed':
            calib, _ = calibration(cfg, model, opts.get('calib_images'),
                                   logger)
            return _speed(cfg, model, calib, opts, logger)
        rows, records = [], []
        for seed in range(opts.seeds) if opts.seeds else [None]:
            calib, record = calibration(cfg, model, opts.get('calib_images'),
                                        logger, seed)
            records.append(record)
            rows += methods_benchmark(
                cfg, runner, calib, methods, bits, opts.get('max_evals'),
                logger, osp.join(opts.out, 'plots') if seed in (None, 0)
                else None, opts.plot_format, record['seed'])
        surfaces = []
        if opts.kind == 'full' and opts.surface:
            surfaces = [loss_surface(cfg, model, calib, b, logger=logger)
                        for b in (4, 2)]
            plot_loss_surface(surfaces, osp.join(
                opts.out, 'plots', f'loss_surface.{opts.plot_format}'))
    header = dict(config=opts.config, checkpoint=checkpoint,
                  calib_images=calib.num_images,
                  test_images=len(runner.test_loop.dataloader.dataset),
                  calibration=records[0], seeds=[r['seed'] for r in records],
                  env=collect_run_env(), max_evals=opts.get('max_evals'),
                  kind=opts.kind, date=datetime.date.today().isoformat())
    summary = seed_summary(rows) if len(records) > 1 else None
    dump_json(dict(header, rows=rows, summary=summary, surfaces=surfaces),
              osp.join(opts.out, 'benchmark.json'))
    table = benchmark_markdown(rows, header, summary)
    from ..fileio import write_text
    write_text(osp.join(opts.out, 'benchmark.md'), table)
    return dict(text=table,
                problems=quick_gate(rows) if opts.kind == 'quick' else [])


def _speed(cfg, model, calib, opts: BenchmarkOptions, logger) -> dict:
    res = speed_benchmark(cfg, model, calib, max_evals=opts.max_evals,
                          logger=logger)
    res['env'] = collect_run_env()
    os.makedirs(opts.out, exist_ok=True)
    dump_json(res, osp.join(opts.out, 'speed.json'))
    text = (f"W{res['w_bits']}A{res['a_bits']}, {res['num_images']} "
            f"calibration images: FP32 forward {res['fp32_forward_s']:.3f} "
            f"s, loss evaluation {res['eval_s']:.3f} s (mean of "
            f"{res['func_evals']} Powell-phase evaluations, channels_last="
            f"{res['channels_last']})\n"
            f"eval_cost_ratio: {res['eval_cost_ratio']:.3f}")
    return dict(text=text, problems=[])
