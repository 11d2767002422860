"""The hooks and stages in-process: an mmengine Runner on the toy classifier
and toy data of toy_runner.py, as a user's config would run them."""
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner
from toy_runner import toy_config, toy_hooks

import mmlapq  # noqa: F401 - registers the hooks and the quantizer
from mmlapq.engine import LAPQError
from mmlapq.engine.run_state import attach_quantizer, quantizer_of, unwrap
from mmlapq.registry import MODELS


def run(cfg):
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    return runner, metrics


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    """One full run: FP32 evaluation, calibration, LAPQ, report."""
    return run(toy_config(str(tmp_path_factory.mktemp('run'))))


def test_the_stages_fill_the_run_state(finished):
    runner, metrics = finished
    state = quantizer_of(runner).state
    assert state.fp32_metrics['accuracy/top1'] >= 0
    assert state.calib is None  # freed after the search
    assert state.calib_record['num_images'] == 16
    assert state.calib_record['holdout_images'] == 8
    # The neck's pool: quantized inputs of the integer target.
    assert [p.name for p in state.plans] == [
        'backbone.layers.0', 'backbone.layers.3', 'neck.gap', 'head.fc']
    assert state.result.search.func_evals == 6
    assert state.init_metrics is not None  # evaluate_init=True
    assert state.quantized_metrics == metrics
    assert state.report['quantized']['top1'] == metrics['accuracy/top1']
    # Nothing of the run went through the message hub.
    assert not [k for k in runner.message_hub.runtime_info
                if k.startswith('lapq')]


def test_the_report_hook_writes_every_output(finished):
    runner, _ = finished
    for name in ('lapq_report.json', 'lapq_report.md', 'lapq_quantized.pth',
                 'plots/p_sweep.png', 'plots/search_loss.png'):
        assert osp.getsize(osp.join(runner.work_dir, name)) > 0, name
    import glob
    assert not glob.glob(osp.join(runner.work_dir, '**', '*.partial*'),
                         recursive=True)


def reload_and_compare(runner, metrics, tmp_path, cfg=None, **quantizer):
    """--eval-quantized in-process: the run's lapq_quantized.pth rebuilt
    into a fresh model (of ``cfg``, default the toy's) gives the run's
    metrics and logits to the bit."""
    cfg = cfg or toy_config(str(tmp_path))
    cfg.quantizer.update(quantizer)
    reloaded = Runner.from_cfg(cfg)
    quantizer = MODELS.build(cfg.quantizer)
    quantizer.state.reload_from = osp.join(runner.work_dir,
                                           'lapq_quantized.pth')
    attach_quantizer(reloaded, quantizer)
    assert reloaded.test() == metrics
    assert quantizer.state.report is None  # evaluated, nothing written
    batch = next(iter(reloaded.test_dataloader))
    x = unwrap(reloaded.model).data_preprocessor(batch, False)['inputs']
    with torch.no_grad():
        assert torch.equal(unwrap(reloaded.model)(x, mode='tensor'),
                           unwrap(runner.model)(x, mode='tensor'))


def test_a_reloaded_checkpoint_gives_identical_outputs(finished, tmp_path):
    reload_and_compare(*finished, tmp_path)


def test_a_10_bit_run_reloads_to_identical_outputs(tmp_path):
    """Codes of 9 to 16 bits are stored in two bytes (a one-byte store
    gave other weights back at 10 bits)."""
    cfg = toy_config(str(tmp_path / 'run'))
    cfg.quantizer.update(w_bits=10, a_bits=10, first_last='same')
    runner, metrics = run(cfg)
    ckpt = torch.load(osp.join(runner.work_dir, 'lapq_quantized.pth'),
                      weights_only=True)
    packed = ckpt['meta']['lapq']['weights']['backbone.layers.3']
    assert packed['bits'] == 10 and packed['data'].dtype == torch.int16
    reload_and_compare(runner, metrics, tmp_path / 'reload', w_bits=10,
                       a_bits=10, first_last='same')


def test_a_missing_stage_is_a_clear_error(tmp_path):
    cfg = toy_config(str(tmp_path), custom_hooks=toy_hooks(calibration=False))
    with pytest.raises(LAPQError, match="add dict\\(type='mmlapq."
                       "CalibrationHook'\\)"):
        run(cfg)


def test_a_config_without_quantizer_is_a_clear_error(tmp_path):
    cfg = toy_config(str(tmp_path), quantizer=None)
    with pytest.raises(LAPQError, match='has no `quantizer` key'):
        run(cfg)


def test_one_quantizer_per_runner(tmp_path):
    first = Runner.from_cfg(toy_config(str(tmp_path / 'a')))
    second = Runner.from_cfg(toy_config(str(tmp_path / 'b')))
    assert quantizer_of(first) is quantizer_of(first)
    assert quantizer_of(first) is not quantizer_of(second)
