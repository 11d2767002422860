"""Checks of a run's lapq_report.json shared by the end-to-end tests."""
import pytest


def assert_guard_followed_its_rule(lapq: dict, z: float = 2.0) -> None:
    """The search's record (``lapq_report.json``'s ``lapq``) ends at the
    checkpoint the held-out guard kept, and the guard kept what its rule
    (lapq/guard.py) says: another checkpoint than the start only when it
    lowered the held-out loss beyond ``z`` paired standard errors, the
    start when none did. No tie is broken here: the rule needs none."""
    points = lapq['guard_checkpoints']
    kept = [c for c in points if c['kept']]
    assert len(kept) == 1, points
    chosen = kept[0]
    beats_start = [c for c in points[1:]
                   if c['holdout_delta'] < -z * c['holdout_se']]
    if chosen is points[0]:
        assert not beats_start, points
    else:
        assert chosen in beats_start, points
    assert lapq['holdout_loss'] == chosen['holdout_loss']
    assert lapq['search_best_loss'] == pytest.approx(chosen['calib_loss'])
    assert points[-1]['calib_loss'] == min(lapq['loss_history'])
    assert lapq['holdout_init_loss'] == points[0]['holdout_loss']
    assert lapq['guard'].startswith(f"kept the {chosen['point']} checkpoint")


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
