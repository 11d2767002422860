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
