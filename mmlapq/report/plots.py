"""Plots of a run (matplotlib, headless): PNG, or SVG for the docs."""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..fileio import atomic_write


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    # The format follows the extension (png for runs, svg for the docs).
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110,
                                               bbox_inches='tight'))
    _plt().close(fig)
    return path


def plot_p_sweep(p_sweep: dict, path: str) -> Optional[str]:
    """Loss at each p, the fitted parabola and p*."""
    if not p_sweep:
        return None
    plt = _plt()
    ps, losses = np.array(p_sweep['ps']), np.array(p_sweep['losses'])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ps, losses, 'o', label='calibration loss')
    grid = np.linspace(ps.min(), ps.max(), 100)
    ax.plot(grid, np.polyval(p_sweep['parabola'], grid), '-',
            label='parabola fit')
    ax.axvline(p_sweep['p_star'], color='k', ls='--',
               label=f"p* = {p_sweep['p_star']:.2f}")
    ax.set_xlabel('p of the Lp clip')
    ax.set_ylabel('calibration loss')
    ax.legend()
    ax.set_title('Choice of p')
    return _save(fig, path)


def plot_search(history: Sequence[float], path: str,
                title: str = 'Joint search') -> Optional[str]:
    """Calibration loss at each evaluation and the best so far."""
    if not history:
        return None
    plt = _plt()
    h = np.array(history)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(h) + 1), h, '.', ms=2, alpha=0.4,
            label='evaluated')
    ax.plot(np.arange(1, len(h) + 1), np.minimum.accumulate(h), '-',
            label='best so far')
    ax.set_xlabel('loss evaluation')
    ax.set_ylabel('calibration loss')
    ax.set_ylim(top=min(h.max(), h[0] + 3 * (h[0] - h.min()) + 1e-9))
    ax.legend()
    ax.set_title(title)
    return _save(fig, path)


def plot_clips(names: Sequence[str], init: Dict[str, float],
               final: Dict[str, float], maxima: Dict[str, float],
               path: str) -> Optional[str]:
    """Each clip relative to its tensor's max |x|, init vs final."""
    names = [n for n in names if n in maxima and maxima[n] > 0]
    if not names:
        return None
    plt = _plt()
    x = np.arange(len(names))
    rel_init = [init[n] / maxima[n] for n in names]
    rel_final = [final[n] / maxima[n] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(names)), 3.8))
    ax.bar(x - 0.2, rel_init, 0.4, label='Lp init')
    ax.bar(x + 0.2, rel_final, 0.4, label='after joint search')
    ax.set_xticks(x)
    ax.set_xticklabels([n.replace('backbone.', '') for n in names],
                       rotation=90, fontsize=6)
    ax.set_ylabel('clip / max |x|')
    ax.legend()
    ax.set_title('Clip per tensor')
    return _save(fig, path)


def plot_loss_surface(surfaces: Sequence[dict], path: str) -> Optional[str]:
    """The paper's picture: loss over a 2-D grid of two clips, one panel per
    bit width. Each surface: dict(bits, u, v, loss, names)."""
    if not surfaces:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(surfaces),
                             figsize=(4.5 * len(surfaces), 3.8))
    axes = np.atleast_1d(axes)
    for ax, s in zip(axes, surfaces):
        loss = np.array(s['loss'])
        cs = ax.contourf(s['u'], s['v'], loss, levels=20, cmap='viridis')
        fig.colorbar(cs, ax=ax)
        ax.set_xlabel(f"clip / init: {s['names'][0]}", fontsize=7)
        ax.set_ylabel(f"clip / init: {s['names'][1]}", fontsize=7)
        ax.set_title(f"{s['bits']} bit: loss range "
                     f'{loss.min():.3f}..{loss.max():.3f}', fontsize=9)
    return _save(fig, path)


def plot_sensitivity(mixed: Optional[dict], path: str) -> Optional[str]:
    """Mixed precision's heatmap: each free layer (rows) against each
    candidate width of its weight and input (columns), the calibration loss
    increase on a log scale; the chosen widths are framed."""
    if not mixed:
        return None
    plt = _plt()
    increase = mixed['sensitivity']['increase']
    chosen = {row['name']: row for row in mixed['layers']}
    names = list(increase)
    columns = sorted({(t, int(b)) for tensors in increase.values()
                      for t, by in tensors.items() for b in by},
                     key=lambda c: (c[0] != 'weight', c[1]))
    values = np.full((len(names), len(columns)), np.nan)
    for i, name in enumerate(names):
        for j, (tensor, bits) in enumerate(columns):
            v = increase[name].get(tensor, {}).get(str(bits))
            if v is not None:
                values[i, j] = max(v, 1e-6)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(columns),
                                    1.5 + 0.16 * len(names)))
    from matplotlib.colors import LogNorm
    image = ax.imshow(values, aspect='auto', cmap='magma_r',
                      norm=LogNorm(vmin=1e-5, vmax=max(
                          1e-4, float(np.nanmax(values)))))
    for i, name in enumerate(names):
        for j, (tensor, bits) in enumerate(columns):
            row = chosen.get(name, {})
            # the candidate chosen (an int16-safe 8-bit weight runs at 7)
            option = row.get('option', [row.get('w_bits'), row.get('a_bits')])
            if option[0 if tensor == 'weight' else 1] == bits:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1,
                                           fill=False, ec='tab:blue', lw=1.5))
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{'W' if t == 'weight' else 'A'}{b}"
                        for t, b in columns])
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([n.replace('backbone.', '') for n in names],
                       fontsize=5)
    fig.colorbar(image, ax=ax, label='calibration loss increase')
    ax.set_title(f"Sensitivity (chosen widths framed)\n{mixed['kind']} "
                 f"{mixed['used']:.4g} of {mixed['budget']:.4g}",
                 fontsize=8)
    return _save(fig, path)


def plot_pareto(rows: Sequence[dict], path: str, cost: str = 'bops',
                title: str = '') -> Optional[str]:
    """Top-1 against a cost (``'bops'`` or ``'weight_bytes'``) of the
    benchmark's rows: one series per method, the mean over seeds with
    sample-std bars, each point labelled with its width (for a mixed row:
    the uniform width whose BOPs were its budget)."""
    groups: Dict[tuple, List[dict]] = {}
    for row in rows:
        if row.get(cost) is None or row['method'] == 'fp32':
            continue
        groups.setdefault((row['method'], row['w_bits'], row['a_bits']),
                          []).append(row)
    if not groups:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    methods = list(dict.fromkeys(m for m, _, _ in groups))
    for method in methods:
        points = sorted(
            (float(np.mean([r[cost] for r in g])),
             float(np.mean([r['top1'] for r in g])),
             float(np.std([r['top1'] for r in g], ddof=1))
             if len(g) > 1 else 0.0, f'W{w}A{a}')
            for (m, w, a), g in groups.items() if m == method)
        xs, ys, es, labels = zip(*points)
        ax.errorbar(xs, ys, yerr=es, marker='o', capsize=3,
                    label='mixed (budget: BOPs of the width)'
                    if method == 'lapq_mixed' else f'uniform ({method})')
        for x, y, label in zip(xs, ys, labels):
            ax.annotate(label, (x, y), textcoords='offset points',
                        xytext=(4, -10), fontsize=7)
    fp32 = [r['top1'] for r in rows if r['method'] == 'fp32']
    if fp32:
        ax.axhline(fp32[0], color='k', ls=':', lw=1, label='FP32')
    ax.set_xscale('log')
    ax.set_xlabel({'bops': 'BOPs (MACs x weight bits x input bits)',
                   'weight_bytes': 'weight codes in the checkpoint (bytes)'}
                  .get(cost, cost))
    ax.set_ylabel('top-1 (%)')
    ax.legend(fontsize=7)
    ax.set_title(title or 'Top-1 against cost', fontsize=9)
    return _save(fig, path)


def plot_run(result, plot_dir: str, prefix: str = '',
             fmt: str = 'png', mixed: Optional[dict] = None) -> List[str]:
    """The plots of one LAPQ run (a ``LapqResult``): p sweep, search loss,
    clips relative to max |x|, and (``mixed``, the allocation's record)
    the sensitivity heatmap. Returns the paths written."""
    os.makedirs(plot_dir, exist_ok=True)
    final = {n: float(v.float().max()) for n, v in result.clips.items()}
    init = {n: float(v.float().max()) for n, v in result.init_clips.items()}

    def path(name):
        return os.path.join(plot_dir, f'{prefix}{name}.{fmt}')

    return [p for p in (
        plot_p_sweep(result.p_sweep, path('p_sweep')),
        plot_search(result.search.history, path('search_loss')),
        plot_clips(list(result.clips), init, final, result.clip_maxima,
                   path('clips')),
        plot_sensitivity(mixed, path('sensitivity'))) if p]
