"""Stopping early (lapq/interrupt.py) and resuming (lapq/resume.py): a
stopped search keeps its best point; a resumed run reaches the clips of a
run that was never stopped."""
import pytest
import torch
from toy import toy_data, trained_toy_chain

from mmlapq.lapq import (CalibrationObjective, CalibrationSet, InitSettings,
                         RoundingSettings, SearchSettings,
                         chain_of_sequential, interrupt, joint_search,
                         run_lapq)
from mmlapq.lapq.psweep import sweep_p
from mmlapq.lapq.resume import ResumeMismatch, SearchStateFile
from mmlapq.quant import QuantSettings, quantize_model


@pytest.fixture(autouse=True)
def no_stop_request():
    interrupt.reset()
    yield
    interrupt.reset()


def toy_objective():
    model = trained_toy_chain(0)
    quantize_model(model, QuantSettings(w_bits=3, a_bits=3,
                                        first_last='same'))
    x, y = toy_data(256, seed=1)
    return CalibrationObjective(chain_of_sequential(model),
                                CalibrationSet.from_tensors(x, y, 64),
                                model=model)


def holdout():
    x, y = toy_data(128, seed=7)
    return CalibrationSet.from_tensors(x, y, 64)


def stop_after(objective, evaluations, reason='SIGTERM'):
    """Request a stop once the objective has computed this many losses."""
    real = objective.loss

    def loss(*args, **kwargs):
        value = real(*args, **kwargs)
        stop_after.calls += 1
        if stop_after.calls == evaluations:
            interrupt.request_stop(reason)
        return value

    stop_after.calls = 0
    objective.loss = loss


def run(objective, state=None):
    return run_lapq(objective, InitSettings(p_grid=[2.0, 3.0, 4.0]),
                    SearchSettings(maxiter=2), 'none',
                    rounding=RoundingSettings('gptq'), holdout=holdout(),
                    state=state)


def test_a_stop_request_ends_the_search_at_its_best_point():
    from mmlapq.lapq import ClipInitializer
    obj = toy_objective()
    ClipInitializer(obj, InitSettings(p=2.0))()
    stop_after(obj, 20)
    result = joint_search(obj, SearchSettings())
    assert result.stopped.startswith('interrupted (SIGTERM)')
    assert result.func_evals == 20  # none computed after the request
    assert result.best_loss == min(result.history)


def test_the_p_sweep_stops_with_the_values_measured():
    seen = []
    losses = iter([3.0, 2.0, 5.0])

    def loss():
        value = next(losses)
        if len(seen) == 2:
            interrupt.request_stop('SIGINT')
        return value

    sweep = sweep_p(seen.append, loss, [2.0, 3.0, 4.0, 5.0])
    assert sweep.ps == [2.0, 3.0] and sweep.fit.p_star == 3.0
    assert 'stopped early' in sweep.fit.fallback


def test_resumed_run_reaches_the_clips_of_an_uninterrupted_one(tmp_path):
    whole = run(toy_objective())

    path = str(tmp_path / 'state.pth')
    obj = toy_objective()
    stopped = SearchStateFile(path, dict(run='toy'))
    # p sweep (3) + p* + init + GPTQ before/after: the search starts at
    # about 8 losses; stop 15 evaluations into it.
    stop_after(obj, 23)
    first = run(obj, stopped)
    assert first.search.stopped.startswith('interrupted')
    assert first.func_evals < whole.func_evals

    interrupt.reset()
    obj = toy_objective()
    stop_after(obj, 10**9)  # count the losses the resumed run computes
    state = SearchStateFile(path, dict(run='toy'), resume=True)
    resumed = run(obj, state)
    assert resumed.resumed and not resumed.search.stopped.startswith(
        'interrupted')
    assert resumed.func_evals == whole.func_evals
    assert resumed.search.history == whole.search.history
    assert resumed.p_star == whole.p_star
    for name, clip in whole.clips.items():
        assert torch.equal(resumed.clips[name], clip), name
    # The saved evaluations were read, not computed again.
    assert stop_after.calls < whole.func_evals


def test_a_state_of_another_run_is_refused(tmp_path):
    path = str(tmp_path / 'state.pth')
    SearchStateFile(path, dict(w_bits=4, seed=0)).update(evaluations=[])
    with pytest.raises(ResumeMismatch, match='other w_bits: resume with '
                       'the same config'):
        SearchStateFile(path, dict(w_bits=3, seed=0), resume=True)
    with pytest.raises(ResumeMismatch, match='no search state'):
        SearchStateFile(str(tmp_path / 'none.pth'), {}, resume=True)
    assert not [p for p in tmp_path.iterdir() if 'partial' in p.name]


def test_a_stage_cut_short_is_not_saved(tmp_path):
    """Stopped inside the p sweep: neither the init nor the search's
    evaluations (relative to the init's clips) may be saved as done."""
    path = str(tmp_path / 'state.pth')
    obj = toy_objective()
    stop_after(obj, 2)  # FP32 loss, then the first p of the sweep
    first = run(obj, SearchStateFile(path, dict(run='toy')))
    assert 'stopped early' in first.p_sweep['fallback']
    assert first.search.stopped.startswith('interrupted')
    import os
    assert not os.path.exists(path)


def test_a_resumed_run_keeps_the_learned_activation_steps(tmp_path):
    """The reconstruction's learned steps are part of the saved rounding
    stage: a run resumed in the search starts from them, and ends where
    the uninterrupted run did (without them it would restart from the
    init's clips)."""
    rounding = RoundingSettings('adaround', adaround=dict(
        iters=5, learn_act_steps=True, act_lr=0.05))

    def run_learned(objective, state=None):
        # no held-out guard: the learned steps are always kept
        return run_lapq(objective, InitSettings(p=3.0),
                        SearchSettings(max_evals=30), 'none',
                        rounding=rounding, state=state)

    whole = run_learned(toy_objective())
    path = str(tmp_path / 'state.pth')
    obj = toy_objective()
    stop_after(obj, 12)
    first = run_learned(obj, SearchStateFile(path, dict(run='toy')))
    assert first.search.stopped.startswith('interrupted')
    interrupt.reset()
    obj = toy_objective()
    resumed = run_learned(obj, SearchStateFile(path, dict(run='toy'),
                                               resume=True))
    assert resumed.search.history == whole.search.history
    for name, clip in whole.clips.items():
        assert torch.equal(resumed.clips[name], clip), name
