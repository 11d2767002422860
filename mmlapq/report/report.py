"""The run report as readable markdown: the summary table and one row per
quantized layer (the json is written by engine/report_builder.py)."""
from typing import Dict, List, Optional

import torch

from ..fileio import write_text


def library_line(env: dict) -> str:
    """'mmcls 1.0.0rc6' / 'mmpretrain 1.2.0' of a run's environment (reports
    written before mmpretrain support name mmcls only)."""
    library = env.get('library', 'mmcls')
    return f"{library} {env.get('library_version', env.get(library))}"


def _clip_value(alpha: Optional[torch.Tensor]):
    if alpha is None:
        return None
    alpha = alpha.detach().cpu()
    return float(alpha) if alpha.dim() == 0 else [float(a) for a in alpha]


def layer_rows(plans, clips: Dict[str, torch.Tensor],
               init_clips: Dict[str, torch.Tensor],
               grids: Dict[str, str]) -> List[dict]:
    rows = []
    for plan in plans:
        w, a = f'{plan.name}.weight', f'{plan.name}.input'
        if a not in clips:  # a quantized ReLU: its output
            a = f'{plan.name}.output'
        rows.append(dict(name=plan.name, type=plan.type, w_bits=plan.w_bits,
                         a_bits=plan.a_bits, w_clip=_clip_value(clips.get(w)),
                         a_clip=_clip_value(clips.get(a)),
                         w_clip_init=_clip_value(init_clips.get(w)),
                         a_clip_init=_clip_value(init_clips.get(a)),
                         w_grid=grids.get(w), a_grid=grids.get(a)))
    return rows


def _fmt(value, digits=2):
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    if isinstance(value, list):
        return f'per-channel ({len(value)})'
    return str(value)


def summary_table(report: dict) -> str:
    """FP32 / layer-wise init / LAPQ: top-1, calibration loss, held-out loss
    (the search's guard), evaluations, seconds."""
    fp32, init = report.get('fp32') or {}, report['init']
    lapq, quant = report['lapq'], report['quantized']
    rounding = (report.get('settings', {}).get('rounding') or {}).get(
        'method', 'nearest')
    search = lapq['method'] + ('' if rounding == 'nearest'
                               else f' + {rounding}')
    # The guard's first held-out loss is where the search started: after
    # the rounding when it ran before the search, so it goes on that row.
    record = report.get('rounding') or {}
    rounded_first = record.get('order') in ('before_search',
                                            'between_searches') \
        and record.get('loss_after') is not None
    start_held = lapq.get('holdout_init_loss')
    rows = [('FP32', fp32.get('top1'), fp32.get('calib_loss'), None, None,
             None),
            (f"{init['method']} init (p={_fmt(init.get('p'))})",
             init.get('top1'), init['calib_loss'],
             None if rounded_first else start_held, None,
             init.get('seconds'))]
    if rounded_first:
        order = record['order'].replace('_', ' ')
        rows.append((f"{record['method']} rounding ({order})", None,
                     record['loss_after'],
                     start_held if record['order'] == 'before_search'
                     else None, None,
                     (report.get('seconds') or {}).get('rounding')))
    rows.append((f'LAPQ ({search})', quant.get('top1'), lapq['calib_loss'],
                 lapq.get('holdout_loss'), lapq['func_evals'],
                 lapq['seconds']))
    lines = ['| stage | top-1 (%) | calibration loss | held-out loss | '
             'evaluations | seconds |', '|---|---|---|---|---|---|']
    for name, top1, loss, held, evals, secs in rows:
        lines.append(f'| {name} | {_fmt(top1)} | {_fmt(loss, 4)} | '
                     f'{_fmt(held, 4)} | {_fmt(evals)} | {_fmt(secs, 1)} |')
    return '\n'.join(lines)


def mixed_lines(mixed: Optional[dict]) -> List[str]:
    """The mixed-precision section: budget, what it used, the check of the
    additive model, and each free layer's sensitivity."""
    if not mixed:
        return []
    check = mixed['check']
    uniform = ', '.join(f'{k} {v:.4g}' for k, v in mixed['uniform'].items())
    uniform_loss = '' if check.get('uniform_loss') is None else \
        f"; the budget's uniform width: {check['uniform_loss']:.5f}"
    lines = [
        '## Mixed precision', '',
        f"Budget {mixed['kind']} {mixed['settings']['budget']}: "
        f"{mixed['budget']:.6g} {mixed['unit']}; used {mixed['used']:.6g}, "
        "measured on the quantized model's layers "
        f"(smallest possible {mixed['minimum']:.6g}; uniform: {uniform}).",
        '',
        f"Additive model: predicted calibration loss "
        f"{check['predicted_loss']:.5f}, measured "
        f"{check['measured_loss']:.5f} (base {check['base_loss']:.5f}"
        f"{uniform_loss}; Lp clips, nearest rounding); rank correlation of "
        f"{len(check['pairs'])} measured pairs with their predictions "
        f"{_fmt(check['pair_spearman'])}. Sensitivity "
        f"{mixed['sensitivity']['probes']} probes in "
        f"{mixed['sensitivity']['seconds']:.1f} s.", '']
    increase = mixed['sensitivity']['increase']
    columns = sorted({(t, int(b)) for tensors in increase.values()
                      for t, by in tensors.items() for b in by},
                     key=lambda c: (c[0] != 'weight', c[1]))
    heads = [f"{'W' if t == 'weight' else 'A'}{b}" for t, b in columns]
    lines += ['| layer | MACs | chosen | ' + ' | '.join(heads) + ' |',
              '|---|---|---|' + '---|' * len(heads)]
    for row in mixed['layers']:
        cells = [increase.get(row['name'], {}).get(t, {}).get(str(b))
                 for t, b in columns]
        lines.append(f"| {row['name']} | {row['macs']} | "
                     f"W{row['w_bits'] or 'fp'}A{row['a_bits'] or 'fp'} | "
                     + ' | '.join(
                         '-' if c is None else f'{c:.2e}' for c in cells)
                     + ' |')
    return lines + ['']


def reconstruction_lines(rounding: Optional[dict]) -> List[str]:
    """The block reconstruction section: per block the output error with
    nearest rounding at the starting steps and after, and its shares (the
    float block on the quantized inputs; the weights alone and the
    activations alone, on float inputs); the guards' decisions."""
    blocks = (rounding or {}).get('reconstruction', {}).get('blocks')
    if not blocks:
        return []
    lines = ['## Block reconstruction', '']
    for key in ('act_steps_guard', 'guard'):
        if (rounding.get(key) or {}).get('why'):
            lines += [f"Guard: {rounding[key]['why']}.", '']
    learned = any('act_clip_ratios' in b for b in blocks)
    lines += ['| block (steps) | layers | output error | inputs alone | '
              'weights alone | activations alone |' + (' activation clips, learned / '
                                       'start |' if learned else ''),
              '|---|---|---|---|---|---|' + ('---|' if learned else '')]

    def _short(value):
        return '-' if value is None else f'{value:.4g}'

    def pair(values):
        return f'{_short(values[0])} -> {_short(values[1])}' if values \
            else '-'

    for block in blocks:
        start, end = block['steps']
        row = (f"| {start}..{end - 1} | {block['layers']} | "
               f"{pair([block['error_nearest'], block['error']])} | "
               f"{_short(block.get('inputs_only'))} | "
               f"{pair(block.get('weights_only'))} | "
               f"{pair(block.get('activations_only'))} |")
        if learned:
            ratios = block.get('act_clip_ratios') or []
            row += ' ' + (', '.join(f'{r:.3f}' for r in ratios) or '-') + \
                ' |'
        lines.append(row)
    return lines + ['']


def write_markdown(report: dict, path: str) -> None:
    s = report['settings']['quant']
    env = report['env']
    status = []
    if report.get('interrupted'):
        status.append(f"**Interrupted ({report['interrupted']})**: the "
                      'model is the best point found before the signal; '
                      'continue with `tools/quantize.py ... --resume`.')
    if report.get('resumed'):
        status.append('Resumed from the search state of an interrupted run.')
    mixed = report.get('mixed')
    title = f"W{s['w_bits']}A{s['a_bits']}" if not mixed else \
        f"mixed precision, {mixed['kind']} {mixed['settings']['budget']}"
    lines = [
        f"# LAPQ report: {title}",
        '',
        *[line for text in status for line in (text, '')],
        f"config `{report.get('config')}`, checkpoint "
        f"`{report.get('checkpoint')}`",
        '',
        summary_table(report),
        '',
        f"p* = {_fmt(report['init'].get('p'), 3)}; search stopped: "
        f"{report['lapq']['stopped']}; "
        f"{_fmt(report['lapq']['ms_per_eval'], 1)} ms per evaluation; "
        f"BN folded: {s['fold_bn']}; bias correction: "
        f"{s['bias_correction']}; first/last layers: {s['first_last']}.",
        '',
        f"Calibration: {report['calibration']['num_images']} images from the "
        f"{report['calibration']['source']} (seed "
        f"{report['calibration']['seed']}); "
        f"{report['calibration'].get('holdout_images', 0)} held-out images "
        f"for the search's guard: {report['lapq'].get('guard') or 'off'}.",
        '',
        '| layer | type | W bits | A bits | W clip (init -> final) | '
        'A clip (init -> final) |',
        '|---|---|---|---|---|---|',
    ]
    for row in report['layers']:
        lines.append(
            f"| {row['name']} | {row['type']} | {_fmt(row['w_bits'])} | "
            f"{_fmt(row['a_bits'])} | {_fmt(row['w_clip_init'], 4)} -> "
            f"{_fmt(row['w_clip'], 4)} | {_fmt(row['a_clip_init'], 4)} -> "
            f"{_fmt(row['a_clip'], 4)} |")
    lines += [''] + mixed_lines(mixed) + reconstruction_lines(
        report.get('rounding'))
    lines += [f"torch {env['torch']}, {library_line(env)}, mmengine "
              f"{env['mmengine']}, mmlapq {env['mmlapq']}, {env['device']}, "
              f"{env['date']}", '']
    write_text(path, '\n'.join(lines))
