"""The benchmark of ``tools/benchmark.py`` on one model, in one process,
built on the run's own pieces: a Runner of the config with the float
model (``engine.evaluation``), the run's calibration set, and each method
as a quantizer that runs the same ``LAPQQuantizer.quantize`` as the
LAPQHook, scored with the Runner's evaluator (mmcls's Accuracy).

- speed: seconds of one plain FP32 forward over the calibration set against
  the mean seconds of one loss evaluation during the Powell phase
  (``eval_cost_ratio``; below 1 means an evaluation is cheaper than a
  forward, thanks to cached weights and the chain's prefix cache).
- methods: every layer-wise baseline and LAPQ at several bit widths, from
  the same FP32 weights and the same calibration set.
"""
import copy
import datetime
import logging
import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..engine.calibration import build_calibration_set
from ..engine.compat import init_scope
from ..engine.env import collect_run_env
from ..engine.errors import LAPQError
from ..engine.evaluation import (build_eval_runner, evaluate, get_logger,
                                 metrics_top)
from ..engine.quantizer import CALIB_DEFAULTS
from ..engine.report_builder import dump_json
from ..engine.run_state import unwrap
from ..fileio import write_text
from ..lapq import CalibrationObjective, CalibrationSet
from ..lapq.chain import build_chain, classifier_logits
from ..lapq.initialize import ClipInitializer
from ..lapq.mixed import layer_macs, model_costs
from ..quant import clips_applied
from ..quant.precision import tf32_mode
from ..report import (benchmark_markdown, plot_loss_surface, plot_pareto,
                      plot_run, seed_summary)
from .gate import QUICK, quick_gate
from .methods import (DEFAULT_BITS, DEFAULT_METHODS, METHODS, MIXED_METHODS,
                      make_quantizer, parse_bits)


def accuracy(runner, model: nn.Module, what: str) -> Dict[str, float]:
    """top-1 / top-5 (percent) of ``model`` with the runner's evaluator."""
    return metrics_top(evaluate(runner, what, model))


def calibration(cfg, model, num_images: Optional[int] = None,
                logger=None, seed: Optional[int] = None
                ) -> Tuple[CalibrationSet, dict]:
    """The calibration (and held-out) images of the config, or of another
    ``seed`` (the held-out images are drawn with seed + 1, as in a run)."""
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
    # one whole sweep, however far the config's own search goes
    quantizer.search.maxiter, quantizer.search.max_evals = 1, max_evals
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

    # The 'lp' row is LAPQ's starting point: read it off the LAPQ run (same
    # p sweep, same clips) instead of repeating the sweep.
    lp_from_lapq = 'lp' in methods and 'lapq' in methods
    macs = layer_macs(float_model, calib.inputs[0])
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
            mixed = quantizer.state.mixed
            name = f'W{w_bits}A{a_bits} {method}'
            row = dict(method=method, w_bits=w_bits, a_bits=a_bits,
                       **accuracy(runner, model, name),
                       calib_loss=result.final_loss,
                       init_calib_loss=result.init_loss,
                       # the search's lowest loss, whatever the guard kept
                       search_min_loss=min(result.search.history),
                       guard=result.search.guard,
                       p=result.p_star, func_evals=result.func_evals,
                       seconds=seconds, seed=seed,
                       # measured on the model, not from its plan
                       **model_costs(model, macs))
            if mixed:
                row['mixed'] = dict(
                    budget=mixed['budget'], used=mixed['used'],
                    seconds=mixed['seconds'],
                    sensitivity_seconds=mixed['sensitivity']['seconds'],
                    widths={r['name']: [r['w_bits'], r['a_bits']]
                            for r in mixed['layers']},
                    check={k: v for k, v in mixed['check'].items()
                           if k != 'pairs'})
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
                    func_evals=0, seconds=result.seconds['init'], seed=seed,
                    **model_costs(model, macs)))
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
    model = copy.deepcopy(float_model)
    quantizer = make_quantizer(cfg.quantizer, 'l2', bits, bits)
    quantizer.wrap(model, calib.inputs[0])
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
    # --cfg-options applied to the config, recorded with the run
    cfg_options: Optional[dict] = None

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
    init_scope(cfg)
    logger = get_logger('mmlapq_benchmark')
    methods = opts.get('methods')
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise LAPQError(f'unknown methods {unknown}: use '
                        f'{", ".join(METHODS)}')
    bits = [parse_bits(b) for b in opts.get('bits')]
    checkpoint = opts.checkpoint or cfg.get('load_from')
    with tf32_mode(cfg.quantizer.get('allow_tf32', False)):
        # The Runner's own log and config go to OUT/logs.
        runner = build_eval_runner(cfg, osp.join(opts.out, 'logs'), checkpoint,
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
                  kind=opts.kind, date=datetime.date.today().isoformat(),
                  cfg_options=opts.cfg_options or None)
    summary = seed_summary(rows) if len(records) > 1 else None
    dump_json(dict(header, rows=rows, summary=summary, surfaces=surfaces),
              osp.join(opts.out, 'benchmark.json'))
    table = write_tables(opts.out, opts.plot_format)
    return dict(text=table,
                problems=quick_gate(rows) if opts.kind == 'quick' else [])


def write_tables(out: str, plot_format: str = 'png') -> str:
    """``out/benchmark.md`` and, with mixed-precision rows, the Pareto
    plots in ``out/plots``, from the run stored in ``out/benchmark.json``
    (``tools/benchmark.py --render OUT`` redoes them without running
    anything). Returns the markdown."""
    import json
    path = osp.join(out, 'benchmark.json')
    if not osp.isfile(path):
        raise LAPQError(f'{path} does not exist: pass the --out folder of '
                        'a benchmark run')
    with open(path) as f:
        stored = json.load(f)
    rows = stored['rows']
    table = benchmark_markdown(rows, stored, stored.get('summary'))
    write_text(osp.join(out, 'benchmark.md'), table)
    if any(r['method'] in MIXED_METHODS for r in rows):
        for cost in ('bops', 'weight_bytes'):
            plot_pareto(rows, osp.join(out, 'plots',
                                       f'pareto_{cost}.{plot_format}'),
                        cost, osp.basename(stored['config']))
    return table


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
