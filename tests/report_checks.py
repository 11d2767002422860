"""Checks of a run's lapq_report.json shared by the end-to-end tests."""
import pytest


def assert_search_ends_at_its_guarded_best(report: dict) -> None:
    """The model ends at the guard's checkpoint of lowest held-out loss,
    and that is the search's best point unless the guard rejected it."""
    lapq = report['lapq']
    points = lapq['guard_checkpoints']
    chosen = min(points, key=lambda c: c['holdout_loss'])
    assert lapq['holdout_loss'] == chosen['holdout_loss']
    assert lapq['search_best_loss'] == pytest.approx(chosen['calib_loss'])
    assert points[-1]['calib_loss'] == min(lapq['loss_history'])
    if lapq['guard'].startswith('kept'):
        assert chosen is points[-1]
    assert lapq['holdout_init_loss'] == points[0]['holdout_loss']


def reloaded_metrics(repo: str, config: str, work_dir: str, reload_dir: str,
                     cfg_options: list) -> dict:
    """The metrics tools/quantize.py --eval-quantized prints for the
    lapq_quantized.pth of a run in ``work_dir``."""
    import os.path as osp
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable, 'tools/quantize.py', config, '--eval-quantized',
         osp.join(work_dir, 'lapq_quantized.pth'), '--work-dir', reload_dir,
         '--cfg-options', *cfg_options],
        cwd=repo, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines()
            if ln.startswith('quantized model')][0]
    return eval(line.split(':', 1)[1])  # the metrics dict it printed
