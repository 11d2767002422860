"""The result tables of README.md and docs/, from stored runs.

Each table is data: a file, the marker pair it sits between (``<!--
results -->`` or ``<!-- results: NAME -->``), its columns, and per row the
stored run, method and bits of each cell. :func:`render` writes the table
and a caption that names the machines and dates of the runs it read;
``tools/results.py --write`` puts it between the markers and ``--check``
fails where the file holds anything else. The runtime tables of
docs/deployment.md and docs/transformers.md (``<!-- results: onnx-MODEL
-->``) are likewise the stored ``tools/benchmark_onnx.py`` runs of
docs/benchmark_onnx/."""
import json
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from .results import (MODEL_INDEX, METAFILE, PAGE, LoadFrom, Source,
                      measured, metafile, results_table)
from .runtime_table import runtime_markdown


@dataclass(frozen=True)
class Cell:
    """One figure: a stored run (docs/benchmark_NAME), its method and
    bits."""
    run: str
    method: str
    bits: str

    @property
    def path(self) -> str:
        return f'docs/benchmark_{self.run}/benchmark.json'


@dataclass(frozen=True)
class Table:
    path: str
    marker: str  # '' for <!-- results -->
    columns: Sequence[str]
    rows: Dict[str, Tuple[Optional[Cell], ...]]
    caption: str
    # A cell whose run is not stored yet reads "not measured" instead of
    # failing the check (for tables that grow run by run).
    missing_ok: bool = False


README_TABLE = Table(
    'README.md', '', ('W8A8', 'W4A4', 'W3A3', 'mixed, BOPs of W4A4'), {
        'VGG-11-BN': (
            Cell('vgg11bn_w8a8_seeds', 'lp', 'w8a8'),
            Cell('vgg11bn_config_seeds', 'config', 'w4a4'),
            Cell('seeds', 'lapq_gptq', 'w3a3'),
            None),
        'ResNet-18': (
            Cell('resnet18_w8a8_seeds', 'lp', 'w8a8'),
            Cell('resnet18_lsq_seeds', 'lapq_qdrop_lsq', 'w4a4'),
            Cell('resnet18_lsq_seeds', 'lapq_qdrop_lsq', 'w3a3'),
            Cell('resnet18_mixed_seeds', 'lapq_mixed', 'w4a4')),
        'MobileNetV2': (
            Cell('mobilenet-v2_w8a8_seeds', 'lp', 'w8a8'),
            Cell('mobilenet-v2_lsq_seeds', 'lapq_qdrop_lsq', 'w4a4'),
            Cell('mobilenet-v2_lsq_seeds', 'lapq_qdrop_lsq', 'w3a3'),
            Cell('mobilenet-v2_mixed_seeds', 'lapq_mixed', 'w4a4')),
        'DeiT-style ViT, 6 layers': (
            Cell('deit-tiny-6l_lp_seeds', 'lp', 'w8a8'),
            Cell('deit-tiny-6l_config_seeds', 'config', 'w4a4'),
            None, None),
    },
    'Top-1 (%) on all 10,000 Fashion-MNIST test images, mean +- sd over 3 '
    'calibration seeds (512 training images each). W8A8: the Lp init '
    "alone. W4A4: each model's config (VGG-11-BN: GPTQ rounding + the "
    'search; ResNet-18, MobileNetV2: QDrop with learned activation steps + '
    'the search; the ViT: LayerNorm reparameterization, QDrop, learned '
    'steps + the search, softmax output at 8 bits). W3A3: the same recipe '
    'at W3A3. Mixed: per-layer widths at the BOPs of uniform W4A4 '
    "(`*_mixed_bops-w4a4.py`). The test set's standard error near 92% is "
    '0.27 points.')

BUDGETS = ('w8a8', 'w4a8', 'w4a4', 'w3a3', 'w2a4')


def _mixed_row(model: str) -> Tuple[Optional[Cell], ...]:
    return tuple(Cell(f'{model}_mixed_seeds' if b == 'w4a4'
                      else f'{model}_mixed_{b}_seeds', 'lapq_mixed', b)
                 for b in BUDGETS)


def _uniform_row(model: str, w2a4: Optional[Cell] = None
                 ) -> Tuple[Optional[Cell], ...]:
    """README's uniform W8A8, W4A4 and W3A3 cells of ``model`` under the
    budgets of the same widths (none at W4A8), and ``w2a4``."""
    w8a8, w4a4, w3a3, _ = README_TABLE.rows[model]
    return (w8a8, None, w4a4, w3a3, w2a4)


MIXED_TABLE = Table(
    'docs/mixed_precision.md', 'mixed',
    tuple(f'BOPs of {b.upper()}' for b in BUDGETS), {
        'MobileNetV2, mixed': _mixed_row('mobilenet-v2'),
        'MobileNetV2, uniform': _uniform_row('MobileNetV2', Cell(
            'mobilenet-v2_lsq_seeds', 'lapq_qdrop_lsq', 'w2a4')),
        'ResNet-18, mixed': _mixed_row('resnet18'),
        'ResNet-18, uniform': _uniform_row('ResNet-18', Cell(
            'resnet18_lsq_seeds', 'lapq_qdrop_lsq', 'w2a4')),
        'VGG-11-BN, mixed': (None, None, None, Cell(
            'vgg11bn_mixed_w3a3_seeds', 'lapq_mixed', 'w3a3'), None),
        'VGG-11-BN, uniform': _uniform_row('VGG-11-BN'),
    },
    'Top-1 (%) on all 10,000 Fashion-MNIST test images, mean +- sd over 3 '
    'calibration seeds. Mixed: `tools/benchmark.py '
    'configs/lapq/MODEL_fmnist_mixed_bops-w4a4.py --methods lapq_mixed '
    '--bits BUDGET --seeds 3` (the config, its budget set to the BOPs of '
    'uniform BUDGET; VGG-11-BN: `vgg11bn_fmnist_mixed_bops-w3a3.py`); '
    'uniform: W8A8 the Lp init alone, the others the W4A4 config at that '
    'width (ResNet-18, MobileNetV2: QDrop with learned steps + the search; '
    'VGG-11-BN: GPTQ + the search).', missing_ok=True)

PAIRED_TABLE = Table(
    'docs/mixed_precision.md', 'mixed-paired',
    ('uniform W4A4, same seeds', 'mixed at its BOPs'), {
        model: (Cell(f'{run}_mixed_seeds', 'config', 'w4a4'),
                Cell(f'{run}_mixed_seeds', 'lapq_mixed', 'w4a4'))
        for model, run in (('MobileNetV2', 'mobilenet-v2'),
                           ('ResNet-18', 'resnet18'))},
    'Top-1 (%) on all 10,000 Fashion-MNIST test images, mean +- sd over '
    'calibration seeds 0, 1, 2; each seed\'s uniform and mixed run in one '
    'process from the same calibration images (the uniform runs of the '
    'five-budget table above are runs of their own).')

TABLES = (README_TABLE, MIXED_TABLE, PAIRED_TABLE)


@dataclass(frozen=True)
class RuntimeTable:
    """The table of a stored ``tools/benchmark_onnx.py`` run (its
    benchmark_onnx.json under docs/benchmark_onnx/)."""
    path: str
    marker: str
    run: str


RUNTIME_TABLES = tuple(
    RuntimeTable(page, f'onnx-{model}', f'docs/benchmark_onnx/{model}.json')
    for page, model in (('docs/deployment.md', 'vgg11bn'),
                        ('docs/deployment.md', 'resnet18'),
                        ('docs/deployment.md', 'mobilenet-v2'),
                        ('docs/transformers.md', 'deit-tiny-6l')))


def _figure(repo: str, cell: Cell, missing_ok: bool) -> Optional[dict]:
    if missing_ok and not osp.isfile(osp.join(repo, cell.path)):
        return None
    return measured(repo, Source('', '', cell.path, cell.method, cell.bits))


def render(repo: str, table: Table) -> str:
    """The table in markdown, FP32 first, then its caption: what each
    column ran, and the machines and dates of the runs."""
    lines = ['| model | FP32 | ' + ' | '.join(table.columns) + ' |',
             '|---|' + '---|' * (len(table.columns) + 1)]
    machines: Dict[str, set] = {}
    for label, cells in table.rows.items():
        figures = [None if c is None else _figure(repo, c, table.missing_ok)
                   for c in cells]
        fp32 = next((f['fp32'] for f in figures if f is not None), None)
        row = [label, '-' if fp32 is None else f'{fp32:.2f}']
        for cell, fig in zip(cells, figures):
            if fig is None:
                row.append('-' if cell is None else 'not measured')
                continue
            row.append(f"{fig['top1']:.2f} +- {fig['top1_sd']:.2f}")
            machines.setdefault(fig['cpu'] or 'CPU model not recorded',
                                set()).add(fig['date'])
        lines.append('| ' + ' | '.join(row) + ' |')
    where = '; '.join(f"{cpu}: runs of {', '.join(sorted(dates))}"
                      for cpu, dates in sorted(machines.items()))
    lines += ['', f'{table.caption} Two x86-64 cores; {where}. Written by '
              '`python tools/results.py --write` from the stored runs '
              '(docs/benchmark_*).']
    return '\n'.join(lines)


def render_runtime(repo: str, table: RuntimeTable) -> str:
    with open(osp.join(repo, table.run)) as f:
        result = json.load(f)
    return (f'{runtime_markdown(result)}\n\nWritten by `python '
            f'tools/results.py --write` from {table.run}.')


def between_markers(path: str, text: str, table: str,
                    marker: str = '') -> str:
    """``text`` with ``table`` between its marker pair."""
    name = f'results: {marker}' if marker else 'results'
    start, end = f'<!-- {name} -->', f'<!-- /{name} -->'
    if start not in text or end not in text:
        raise ValueError(f'{path} lacks the {start} ... {end} markers')
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    return f'{head}{start}\n{table}\n{end}{tail}'


def expected_files(repo: str, load_from: LoadFrom) -> Dict[str, str]:
    """Path -> the text each generated file must hold."""
    page = between_markers(PAGE, open(osp.join(repo, PAGE)).read(),
                           results_table(repo, load_from))
    files = {}
    rendered = [(t, render(repo, t)) for t in TABLES] + [
        (t, render_runtime(repo, t)) for t in RUNTIME_TABLES]
    for table, markdown in rendered:
        text = files.get(table.path) or open(osp.join(repo, table.path)).read()
        files[table.path] = between_markers(table.path, text, markdown,
                                            table.marker)
    meta = yaml.safe_dump(metafile(repo, load_from), sort_keys=False,
                          width=79)
    index = yaml.safe_dump({'Import': [METAFILE]}, sort_keys=False)
    return {PAGE: page, METAFILE: meta, MODEL_INDEX: index, **files}


def stale_files(repo: str, load_from: LoadFrom) -> List[str]:
    """The generated files whose text differs from the stored runs'."""
    stale = []
    for path, text in expected_files(repo, load_from).items():
        full = osp.join(repo, path)
        if not osp.isfile(full) or open(full).read() != text:
            stale.append(path)
    return stale


def write_files(repo: str, load_from: LoadFrom) -> List[str]:
    from ..fileio import atomic_write
    written = []
    for path, text in expected_files(repo, load_from).items():
        full = osp.join(repo, path)
        if osp.isfile(full) and open(full).read() == text:
            continue

        def save(tmp, text=text):
            with open(tmp, 'w') as f:
                f.write(text)
        atomic_write(full, save)
        written.append(path)
    return written
