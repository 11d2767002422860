"""The algorithm page's figures, from stored runs.

``configs/lapq/README.md`` (between its ``<!-- results -->`` markers) and
``configs/lapq/metafile.yml`` (OpenMMLab's model-index format) are written
from the ``benchmark.json`` of stored ``tools/benchmark.py --seeds 3``
runs under docs/: the mean +- sd of each top-1 over the calibration
seeds. report/result_tables.py writes them with README's and docs' result
tables; ``tools/results.py --check`` fails where a file differs from what
the runs give, so no figure is edited by hand."""
import glob
import json
import os.path as osp
import re
from dataclasses import dataclass
from typing import Callable, Optional


PAGE = 'configs/lapq/README.md'
METAFILE = 'configs/lapq/metafile.yml'
MODEL_INDEX = 'model-index.yml'
PAPER = dict(URL='https://arxiv.org/abs/1911.07190',
             Title='Loss Aware Post-training Quantization')


@dataclass(frozen=True)
class Source:
    """Where a config's figure is stored: the run, its method and bits."""
    config: str
    model: str
    run: str
    method: str
    bits: str
    note: str = ''


SOURCES = (
    Source('configs/lapq/vgg11bn_fmnist_w4a4.py', 'VGG-11-BN',
           'docs/benchmark_vgg11bn_config_seeds/benchmark.json', 'config',
           'w4a4'),
    Source('configs/lapq/resnet18_fmnist_w4a4.py', 'ResNet-18',
           'docs/benchmark_resnet18_lsq_seeds/benchmark.json',
           'lapq_qdrop_lsq', 'w4a4'),
    Source('configs/lapq/mobilenet-v2_fmnist_w4a4.py', 'MobileNetV2',
           'docs/benchmark_mobilenet-v2_lsq_seeds/benchmark.json',
           'lapq_qdrop_lsq', 'w4a4'),
    Source('configs/lapq/resnet18_fmnist_mixed_bops-w4a4.py', 'ResNet-18',
           'docs/benchmark_resnet18_mixed_seeds/benchmark.json',
           'lapq_mixed', 'w4a4', 'mixed widths at the BOPs of W4A4'),
    Source('configs/lapq/mobilenet-v2_fmnist_mixed_bops-w4a4.py',
           'MobileNetV2',
           'docs/benchmark_mobilenet-v2_mixed_seeds/benchmark.json',
           'lapq_mixed', 'w4a4', 'mixed widths at the BOPs of W4A4'),
    Source('configs/lapq/vgg11bn_fmnist_mixed_bops-w3a3.py', 'VGG-11-BN',
           'docs/benchmark_vgg11bn_mixed_w3a3_seeds/benchmark.json',
           'lapq_mixed', 'w3a3', 'mixed widths at the BOPs of W3A3'),
    Source('configs/lapq/deit-tiny-6l_fmnist_w4a4.py',
           'DeiT-style ViT, 6 layers',
           'docs/benchmark_deit-tiny-6l_config_seeds/benchmark.json',
           'config', 'w4a4', 'softmax output at 8 bits'),
)


def _bits(text: str) -> tuple:
    w, a = re.fullmatch(r'w(\d+)a(\d+)', text).groups()
    return int(w), int(a)


def measured(repo: str, source: Source) -> dict:
    """The source's figures from its stored run: FP32 and quantized top-1
    (mean and sd over its seeds), the seeds, the seconds, the date."""
    path = osp.join(repo, source.run)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{source.run}: the stored run of '
                                f'{source.config} is missing')
    run = json.load(open(path))
    w_bits, a_bits = _bits(source.bits)
    rows = {(r['method'], r['w_bits'], r['a_bits']): r
            for r in run['summary'] or []}
    row = rows.get((source.method, w_bits, a_bits))
    fp32 = rows.get(('fp32', 32, 32))
    if row is None or fp32 is None:
        raise ValueError(f'{source.run} has no 3-seed summary of '
                         f'{source.method} at {source.bits}')
    weight_bytes = next((r.get('weight_bytes') for r in run['rows']
                         if (r['method'], r['w_bits'], r['a_bits']) ==
                         (source.method, w_bits, a_bits)), None)
    return dict(fp32=round(fp32['top1_mean'], 2),
                weights_kib=None if weight_bytes is None
                else round(weight_bytes / 1024),
                top1=round(row['top1_mean'], 2),
                top1_sd=round(row['top1_std'], 2),
                seeds=len(row['seeds']), seconds=round(row['seconds_mean']),
                date=run['date'], cpu=run['env'].get('cpu', ''))


# config path -> its float checkpoint (load_from, inherited too); the
# tool passes mmengine's config reader, so that report/ imports no
# OpenMMLab package
LoadFrom = Callable[[str], Optional[str]]


def _name(config: str) -> str:
    return osp.splitext(osp.basename(config))[0]


def metafile(repo: str, load_from: LoadFrom) -> dict:
    """configs/lapq/metafile.yml: the LAPQ collection and one model per
    config in configs/lapq/, with Results where a stored run measured it."""
    sources = {s.config: s for s in SOURCES}
    models = []
    for path in sorted(glob.glob(osp.join(repo, 'configs/lapq/*.py'))):
        config = osp.relpath(path, repo)
        model = {'Name': _name(config), 'In Collection': 'LAPQ',
                 'Config': config}
        source = sources.get(config)
        if source is not None:
            fig = measured(repo, source)
            model['Metadata'] = {'Bits': source.bits.upper(),
                                 'Calibration Seeds': fig['seeds']}
            model['Results'] = [{
                'Task': 'Image Classification', 'Dataset': 'Fashion-MNIST',
                'Metrics': {'Top 1 Accuracy': fig['top1'],
                            'Top 1 Accuracy SD': fig['top1_sd'],
                            'FP32 Top 1 Accuracy': fig['fp32']}}]
        weights = load_from(osp.join(repo, config))
        if weights:
            model['Weights'] = weights
        models.append(model)
    collection = {'Name': 'LAPQ', 'Metadata': {
        'Training Data': 'calibration images (512 by default)',
        'Training Techniques': ['Post-Training Quantization',
                                'Loss Aware Post-training Quantization']},
        'Paper': PAPER, 'README': PAGE}
    return {'Collections': [collection], 'Models': models}


def results_table(repo: str, load_from: LoadFrom) -> str:
    """The page's results table: the measured configs, then the ImageNet
    ones, which need ImageNet to measure."""
    lines = ['| model | bits | FP32 top-1 | quantized top-1 (mean +- sd, '
             'seeds) | weights (KiB) | quantize (s) | config | float '
             'checkpoint |', '|---|---|---|---|---|---|---|---|']
    cpus, dates = set(), set()
    for s in SOURCES:
        fig = measured(repo, s)
        dates.add(fig['date'])
        if fig['cpu']:
            cpus.add(fig['cpu'])
        bits = s.bits.upper() + (f' ({s.note})' if s.note else '')
        weights = load_from(osp.join(repo, s.config)) or '-'
        lines.append(
            f"| {s.model} | {bits} | {fig['fp32']:.2f} | {fig['top1']:.2f} "
            f"+- {fig['top1_sd']:.2f} ({fig['seeds']}) | "
            f"{fig['weights_kib'] or '-'} | {fig['seconds']} | "
            f"[{_name(s.config)}](../../{s.config}) | `{weights}` |")
    measured_configs = {s.config for s in SOURCES}
    for path in sorted(glob.glob(osp.join(repo, 'configs/lapq/*.py'))):
        config = osp.relpath(path, repo)
        if config in measured_configs or 'fmnist' in config:
            continue
        lines.append(f'| {_name(config)} | - | - | not measured: needs '
                     f'ImageNet | - | - | [{_name(config)}](../../{config}) '
                     f'| {load_from(osp.join(repo, config)) or "-"} |')
    machine = ', '.join(sorted(cpus)) or '2 x86-64 CPU cores'
    lines.append('')
    lines.append(f'Fashion-MNIST, all 10,000 test images; 512 calibration '
                 f'images from the training split per seed; {machine}, '
                 f"runs of {', '.join(sorted(dates))}. Weights: the quantized "
                 'weights at their bits; quantize: the seconds of one '
                 'quantization in the stored run (its threads and load as '
                 'its page says; not a speed benchmark). Written by '
                 '`python tools/results.py --write` from the stored runs.')
    return '\n'.join(lines)
