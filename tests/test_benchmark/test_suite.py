"""The benchmark's stored run renders again (benchmark/suite.py's
write_tables, ``tools/benchmark.py --render``): the markdown and the
Pareto plots come from benchmark.json alone."""
import json
import os.path as osp

import pytest

from mmlapq.benchmark.suite import write_tables
from mmlapq.engine import LAPQError


def test_a_stored_run_renders_its_table_and_plots(tmp_path):
    rows = [dict(method=m, w_bits=4, a_bits=4, seed=0, top1=t, top5=99.0,
                 calib_loss=0.2, p=3.0, func_evals=10, seconds=1.0,
                 bops=b, weight_bytes=1000.0)
            for m, t, b in (('lapq_mixed', 90.8, 1.0e8),
                            ('config', 90.6, 1.1e8))]
    env = dict(device='cpu', torch='2', mmcls='1', mmengine='0',
               mmlapq='0', date='today')
    (tmp_path / 'benchmark.json').write_text(json.dumps(dict(
        config='configs/x.py', checkpoint='w.pth', calib_images=512,
        test_images=10000, env=env, seeds=[0], rows=rows, summary=None)))
    text = write_tables(str(tmp_path), 'png')
    assert (tmp_path / 'benchmark.md').read_text() == text
    assert '| 1.0 | 1e+08 | 1000 |' in text
    assert osp.getsize(tmp_path / 'plots' / 'pareto_bops.png') > 0
    with pytest.raises(LAPQError, match='does not exist'):
        write_tables(str(tmp_path / 'none'))
