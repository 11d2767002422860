"""The CI gate of the quick benchmark trips on the regressions it is for."""
from mmlapq.benchmark.gate import QUICK_GATE, quick_gate


def rows(w3a3_loss=0.1835, w3a3_top1=91.8, init=0.2276):
    fp32 = dict(method='fp32', w_bits=32, a_bits=32, top1=94.4)
    w4 = dict(method='lapq', w_bits=4, a_bits=4, top1=93.5,
              calib_loss=0.1307, init_calib_loss=0.1512)
    w3 = dict(method='lapq', w_bits=3, a_bits=3, top1=w3a3_top1,
              calib_loss=w3a3_loss, init_calib_loss=init)
    return [fp32, w4, w3]


def test_measured_rows_pass():
    assert quick_gate(rows()) == []


def test_a_search_that_keeps_its_init_fails():
    problems = quick_gate(rows(w3a3_loss=0.2276))
    assert len(problems) == 1 and 'only 0.0% below its Lp init' in problems[0]


def test_the_gate_reads_the_searchs_lowest_loss_not_the_guards_choice():
    """The guard may keep the start (calib_loss = init); the search must
    still have found lower losses."""
    guarded = rows(w3a3_loss=0.2276)
    guarded[2]['search_min_loss'] = 0.1835
    assert quick_gate(guarded) == []
    guarded[2]['search_min_loss'] = 0.2276
    assert len(quick_gate(guarded)) == 1


def test_a_broken_model_fails():
    problems = quick_gate(rows(w3a3_top1=94.4 - QUICK_GATE[(3, 3)][1] - 0.1))
    assert len(problems) == 1 and 'points below FP32' in problems[0]


def test_nan_and_missing_rows_fail():
    broken = rows(w3a3_top1=float('nan'))
    assert any('NaN' in p for p in quick_gate(broken))
    assert quick_gate(rows()[:2]) == ['W3A3 lapq: no row to check']
