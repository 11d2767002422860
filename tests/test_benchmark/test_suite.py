"""The benchmark's stored run renders again (benchmark/suite.py's
write_tables, ``tools/benchmark.py --render``): the markdown and the
Pareto plots come from benchmark.json alone."""
import json
import os.path as osp

import pytest
import torch

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


def test_speed_benchmark_sweeps_whatever_max_evals_the_config_sets():
    """eval_cost_ratio is a mean over one whole Powell sweep (the first
    evaluations, on the early layers, cost the most): a config that bounds
    its own search must not cut the sweep short; --max-evals does."""
    from mmengine.config import ConfigDict
    from toy import toy_data, trained_toy_chain

    from mmlapq.benchmark.suite import speed_benchmark
    from mmlapq.lapq import CalibrationSet
    class Classifier(torch.nn.Module):  # the toy chain, called as mmcls's
        def __init__(self):
            super().__init__()
            self.net = trained_toy_chain()

        def forward(self, x, mode='tensor'):
            return self.net(x)

    x, y = toy_data(128)
    calib = CalibrationSet.from_tensors(x, y, 64)
    cfg = ConfigDict(quantizer=dict(
        type='mmlapq.LAPQQuantizer', w_bits=4, a_bits=4, init=dict(p=2.0),
        search=dict(max_evals=3), calib=dict(holdout_images=0)))
    whole = speed_benchmark(cfg, Classifier(), calib, repeats=1)
    assert whole['func_evals'] > 3
    bounded = speed_benchmark(cfg, Classifier(), calib, max_evals=5,
                              repeats=1)
    assert bounded['func_evals'] == 5
