"""Ctrl-C and preemption (engine/interrupt.py): a signal sent to
tools/quantize.py in the middle of the search ends the run at its best
point, evaluated, reported as interrupted and saved, with exit status
128 + the signal; --resume then finishes the search with the clips of a run
that was never interrupted. (SIGTERM is checked in-process: the same
handler.)"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'lapq', 'vgg11bn_fmnist_w4a4.py')
SMALL = ['--calib-images', '96', '--cfg-options',
         'test_dataloader.dataset.indices=300',
         'quantizer.init.p_grid=[2.0,3.0,4.0]',
         'quantizer.search.maxiter=1', 'quantizer.search.log_interval=0',
         'quantizer.calib.holdout_images=96',
         # Nearest rounding over the activation clips: what is tested is
         # the stop and the resume, and GPTQ on one thread took half of
         # each of the three runs.
         'quantizer.rounding.method=nearest',
         'quantizer.search.variables=activations']
# One thread: the three runs must take the same path (oneDNN picks its
# kernels by thread count).
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def quantize(work_dir, *extra):
    return subprocess.run(
        [sys.executable, 'tools/quantize.py', CONFIG, '--work-dir', work_dir,
         *extra, *SMALL], cwd=REPO, capture_output=True, text=True,
        timeout=900, env=ENV)


def quantize_and_signal(work_dir, signum, at_eval):
    """Run the tool and send ``signum`` once the search logged its
    evaluation number ``at_eval``."""
    proc = subprocess.Popen(
        [sys.executable, 'tools/quantize.py', CONFIG, '--work-dir', work_dir,
         *SMALL], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=ENV)
    sent = False
    for line in proc.stdout:
        if not sent and f'powell: eval {at_eval},' in line:
            proc.send_signal(signum)
            sent = True
    stderr = proc.stderr.read()
    assert sent, stderr[-3000:]
    return proc.wait(timeout=600), stderr


def report(work_dir):
    with open(osp.join(work_dir, 'lapq_report.json')) as f:
        return json.load(f)


def clips(rep):
    return [(layer['name'], layer['w_clip'], layer['a_clip'])
            for layer in rep['layers']]


@pytest.mark.slow
def test_sigint_mid_search_then_resume(tmp_path, fmnist_data):
    whole_dir, cut_dir = str(tmp_path / 'whole'), str(tmp_path / 'cut')
    proc = quantize(whole_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    whole = report(whole_dir)
    assert whole['interrupted'] is None and not whole['resumed']
    assert not osp.exists(osp.join(whole_dir, 'lapq_search_state.pth'))

    status, stderr = quantize_and_signal(cut_dir, signal.SIGINT, 6)
    assert status == 130, stderr[-3000:]
    assert 'error: interrupted' in stderr
    cut = report(cut_dir)
    assert cut['interrupted'] == 'SIGINT'
    assert cut['lapq']['stopped'].startswith('interrupted (SIGINT)')
    assert cut['lapq']['func_evals'] < whole['lapq']['func_evals']
    assert cut['quantized']['top1'] is not None  # evaluated
    assert osp.exists(osp.join(cut_dir, 'lapq_quantized.pth'))
    assert osp.exists(osp.join(cut_dir, 'lapq_search_state.pth'))

    proc = quantize(cut_dir, '--resume')
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = report(cut_dir)
    assert resumed['resumed'] and resumed['interrupted'] is None
    assert resumed['lapq']['loss_history'] == whole['lapq']['loss_history']
    assert clips(resumed) == clips(whole)
    assert resumed['quantized'] == whole['quantized']
    assert not osp.exists(osp.join(cut_dir, 'lapq_search_state.pth'))


def test_sigterm_requests_a_stop_and_exits_143(tmp_path):
    """The handlers in-process: the first SIGTERM asks the stages to stop
    (exit status 143), a second one aborts; the old handler comes back."""
    from mmlapq.engine.interrupt import exit_status, stop_on_signals
    from mmlapq.lapq import interrupt
    before = signal.getsignal(signal.SIGTERM)
    try:
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            assert interrupt.stop_requested()
            assert interrupt.stop_reason() == 'SIGTERM'
            assert exit_status() == 143
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        interrupt.reset()


def test_resume_without_a_state_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, 'tools/quantize.py', CONFIG, '--work-dir',
         str(tmp_path / 'other'), '--resume'], cwd=REPO,
        capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        'error: no search state')
