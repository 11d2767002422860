"""The algorithm page (configs/lapq/README.md), its metafile and
model-index.yml: OpenMMLab's format, every config listed, and every
figure the stored runs' (tools/results.py)."""
import glob
import os.path as osp
import shutil

import yaml
from inprocess import tool_module

from mmlapq.report.result_tables import README_TABLE, RUNTIME_TABLES, TABLES
from mmlapq.report.results import METAFILE, MODEL_INDEX, PAGE, SOURCES

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def results_tool():
    return tool_module('results')


def test_the_metafile_lists_every_config_and_nothing_else():
    index = yaml.safe_load(open(osp.join(REPO, MODEL_INDEX)))
    assert index == {'Import': [METAFILE]}
    meta = yaml.safe_load(open(osp.join(REPO, METAFILE)))
    (collection, ) = meta['Collections']
    assert collection['Name'] == 'LAPQ'
    assert collection['Paper']['URL'] == 'https://arxiv.org/abs/1911.07190'
    assert osp.isfile(osp.join(REPO, collection['README']))
    configs = sorted(osp.relpath(p, REPO) for p in
                     glob.glob(osp.join(REPO, 'configs/lapq/*.py')))
    assert sorted(m['Config'] for m in meta['Models']) == configs
    names = [m['Name'] for m in meta['Models']]
    assert len(set(names)) == len(names)
    measured = {m['Config']: m for m in meta['Models'] if 'Results' in m}
    assert set(measured) == {s.config for s in SOURCES}
    for model in meta['Models']:
        assert model['In Collection'] == 'LAPQ'
        for result in model.get('Results', []):
            assert result['Task'] == 'Image Classification'
            metrics = result['Metrics']
            assert 0 < metrics['Top 1 Accuracy'] <= 100
            assert metrics['FP32 Top 1 Accuracy'] >= \
                metrics['Top 1 Accuracy'] - 1  # a sane pair, not a typo


def test_the_page_follows_openmmlab_algorithm_pages():
    page = open(osp.join(REPO, PAGE)).read()
    for part in ('<!-- [ALGORITHM] -->', '## Abstract',
                 '## Results and models', '## Citation', '```bibtex'):
        assert part in page, part
    for source in SOURCES:
        assert f'](../../{source.config})' in page


def test_check_passes_here_and_fails_on_a_hand_edited_figure(tmp_path):
    tool = results_tool()
    assert tool.main(['--check']) == 0
    copy = tmp_path / 'repo'
    shutil.copytree(osp.join(REPO, 'configs'), copy / 'configs')
    shutil.copy(osp.join(REPO, MODEL_INDEX), copy / MODEL_INDEX)
    for table in TABLES + RUNTIME_TABLES:
        target = copy / table.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(osp.join(REPO, table.path), target)
    runs = {s.run for s in SOURCES} | {
        c.path for table in TABLES for cells in table.rows.values()
        for c in cells if c is not None
        and osp.isfile(osp.join(REPO, c.path))} | {
            table.run for table in RUNTIME_TABLES}
    for run in runs:
        (copy / osp.dirname(run)).mkdir(parents=True, exist_ok=True)
        shutil.copy(osp.join(REPO, run), copy / run)
    assert tool.main(['--check', '--repo', str(copy)]) == 0
    page = copy / PAGE
    text = page.read_text()
    first = SOURCES[0]
    figure = next(line for line in text.splitlines()
                  if f'[{osp.splitext(osp.basename(first.config))[0]}]'
                  in line).split('|')[4].split('+-')[0].strip()
    page.write_text(text.replace(f'| {figure} +-', '| 99.99 +-', 1))
    assert tool.main(['--check', '--repo', str(copy)]) == 1
    assert tool.main(['--write', '--repo', str(copy)]) == 0
    assert page.read_text() == text  # the runs' figure is back
    (copy / first.run).unlink()  # a run that is gone is an error
    assert tool.main(['--check', '--repo', str(copy)]) == 1


def copy_of_the_pages(tmp_path):
    """configs/, docs/ (the stored runs with the pages), model-index.yml
    and README.md, copied to a repository of their own."""
    copy = tmp_path / 'repo'
    shutil.copytree(osp.join(REPO, 'configs'), copy / 'configs')
    shutil.copytree(osp.join(REPO, 'docs'), copy / 'docs')
    for name in (MODEL_INDEX, README_TABLE.path):
        shutil.copy(osp.join(REPO, name), copy / name)
    return copy


def test_check_fails_on_a_hand_edited_readme_figure(tmp_path):
    """README's results table: one figure edited by hand fails the check,
    --write puts the stored run's figure back."""
    tool, copy = results_tool(), copy_of_the_pages(tmp_path)
    assert tool.main(['--check', '--repo', str(copy)]) == 0
    readme = copy / README_TABLE.path
    text = readme.read_text()
    row = next(line for line in text.splitlines()
               if line.startswith('| MobileNetV2 |'))
    figure = row.split('|')[4].split('+-')[0].strip()  # W4A4
    readme.write_text(text.replace(row, row.replace(figure, '99.99', 1)))
    assert tool.main(['--check', '--repo', str(copy)]) == 1
    assert tool.main(['--write', '--repo', str(copy)]) == 0
    assert readme.read_text() == text


def test_check_fails_on_a_hand_edited_runtime_figure(tmp_path):
    """docs/deployment.md's latency tables are the stored
    tools/benchmark_onnx.py runs': one millisecond figure edited by hand
    fails the check, --write puts it back."""
    tool, copy = results_tool(), copy_of_the_pages(tmp_path)
    page = copy / RUNTIME_TABLES[0].path
    text = page.read_text()
    start = text.index(f'<!-- results: {RUNTIME_TABLES[0].marker} -->')
    row = next(line for line in text[start:].splitlines()
               if line.startswith('| onnxruntime | FP32 |'))
    ms = row.split('|')[4].split(',')[0].strip()  # batch 1, milliseconds
    page.write_text(text.replace(row, row.replace(f'| {ms},', '| 0.01,', 1)))
    assert tool.main(['--check', '--repo', str(copy)]) == 1
    assert tool.main(['--write', '--repo', str(copy)]) == 0
    assert page.read_text() == text
