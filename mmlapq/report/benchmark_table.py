"""The benchmark's markdown table (docs/benchmark*/benchmark.md), and the
spread over calibration seeds."""
import math
from collections import OrderedDict
from typing import List, Optional

from .report import library_line


def _mean_std(values: List[float]) -> tuple:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean)**2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def seed_summary(rows: List[dict]) -> List[dict]:
    """One row per (bit width, method) over the rows of several calibration
    seeds: mean and sample std of top-1 and of the calibration loss, mean
    seconds, the seeds counted."""
    groups: 'OrderedDict[tuple, List[dict]]' = OrderedDict()
    for r in rows:
        groups.setdefault((r['w_bits'], r['a_bits'], r['method']),
                          []).append(r)
    out = []
    for (w_bits, a_bits, method), group in groups.items():
        top1 = _mean_std([r['top1'] for r in group])
        losses = [r['calib_loss'] for r in group
                  if r['calib_loss'] is not None]
        loss = _mean_std(losses) if losses else (None, None)
        out.append(dict(method=method, w_bits=w_bits, a_bits=a_bits,
                        top1_mean=top1[0], top1_std=top1[1],
                        calib_loss_mean=loss[0], calib_loss_std=loss[1],
                        seconds_mean=_mean_std([r['seconds']
                                                for r in group])[0],
                        seeds=[r.get('seed') for r in group]))
    return out


def _wa(r: dict) -> str:
    return 'FP32' if r['method'] == 'fp32' else f"W{r['w_bits']}A{r['a_bits']}"


def _fmt(value, digits=2) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def benchmark_markdown(rows: List[dict], header: dict,
                       summary: Optional[List[dict]] = None) -> str:
    """The rows as a table; with ``summary`` (several seeds), the table of
    means +- standard deviations over the seeds first."""
    env = header['env']
    lines = [f"# Benchmark: {header['config']}", '',
             f"checkpoint `{header['checkpoint']}`; calibration "
             f"{header['calib_images']} images (training split); test "
             f"{header['test_images']} images; {env['device']}; "
             f"torch {env['torch']}, {library_line(env)}, mmengine "
             f"{env['mmengine']}, mmlapq {env['mmlapq']}; {env['date']}", '']
    if header.get('cfg_options'):
        options = ' '.join(f'{k}={v}' for k, v in header['cfg_options']
                           .items())
        lines[-1:-1] = [f'config overridden with `--cfg-options {options}`']
    if summary:
        seeds = header.get('seeds', [])
        lines += [f'Mean +- sample standard deviation over {len(seeds)} '
                  f'calibration draws (seeds {seeds}):', '',
                  '| W/A | method | top-1 | calib loss | seconds |',
                  '|---|---|---|---|---|']
        for r in summary:
            loss = '-' if r['calib_loss_mean'] is None else \
                f"{r['calib_loss_mean']:.4f} +- {r['calib_loss_std']:.4f}"
            lines.append(f"| {_wa(r)} | {r['method']} | "
                         f"{r['top1_mean']:.2f} +- {r['top1_std']:.2f} | "
                         f"{loss} | {r['seconds_mean']:.1f} |")
        lines += ['', 'Each draw:', '']
    seed_column = summary is not None
    lines += ['| W/A | method | ' + ('seed | ' if seed_column else '') +
              'top-1 | top-5 | calib loss | p | evals | seconds | BOPs | '
              'weight bytes |',
              '|---|---|' + ('---|' if seed_column else '') +
              '---|---|---|---|---|---|---|---|']
    for r in rows:
        seed = f"{r.get('seed')} | " if seed_column else ''
        # measured on the quantized model (lapq/mixed/running.py)
        bops = '-' if r.get('bops') is None else f"{r['bops']:.6g}"
        size = '-' if r.get('weight_bytes') is None else \
            f"{r['weight_bytes']:.0f}"
        lines.append(f"| {_wa(r)} | {r['method']} | {seed}{_fmt(r['top1'])} "
                     f"| {_fmt(r.get('top5'))} | {_fmt(r['calib_loss'], 4)} "
                     f"| {_fmt(r.get('p'))} | {r['func_evals']} | "
                     f"{r['seconds']:.1f} | {bops} | {size} |")
    return '\n'.join(lines) + '\n'
