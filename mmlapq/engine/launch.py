"""One quantization run from a config: what ``tools/quantize.py`` does
after parsing its arguments.

Cheap checks first (settings, checkpoint file, datasets), on every process
so that a failure stops all of them with the same line; then the Runner,
the strict checkpoint load and ``runner.test()``, whose hooks run the
stages. A failure leaves nothing half-written behind.
"""
import os.path as osp
import shutil
from typing import Optional

from .checkpoint import check_checkpoint_exists, load_float_checkpoint
from .compat import init_scope
from .data_checks import check_datasets, reading_data
from .dist import init_distributed, ranks_agree
from .errors import LAPQError
from .run_state import RunState, attach_quantizer, unwrap
from .interrupt import stop_on_signals
from .stages import SEARCH_STATE
from ..quant.precision import tf32_mode


def _check_layer_plan(model, quantizer) -> None:
    """A layer pattern that matches nothing fails now, not after the FP32
    evaluation."""
    from ..quant import plan_layers
    try:
        plan_layers(model, quantizer.quant)
    except ValueError as exc:
        raise LAPQError(str(exc)) from None


def quantize_from_config(cfg, eval_quantized: Optional[str] = None,
                         resume: bool = False) -> RunState:
    """Quantize the model of ``cfg`` (float weights from ``cfg.load_from``)
    and evaluate it; or, with ``eval_quantized``, evaluate the quantized
    checkpoint of an earlier run. ``resume``: continue the interrupted run
    whose search state is in the work dir. SIGINT / SIGTERM finish the run
    at its best point (see engine/interrupt.py). Returns the run's
    state."""
    from mmengine.runner import Runner

    from ..registry import MODELS
    init_scope(cfg)
    if osp.exists(cfg.work_dir) and not osp.isdir(cfg.work_dir):
        raise LAPQError(f'work dir {cfg.work_dir} is an existing file, not a '
                        'folder: pass another path with --work-dir')
    quantizer = MODELS.build(cfg.quantizer)  # bad settings fail here
    state = quantizer.state
    state.resume = resume
    if resume and eval_quantized:
        raise LAPQError('--resume continues a quantization run: it does not '
                        'go with --eval-quantized')
    state_file = osp.join(cfg.work_dir, SEARCH_STATE)
    if resume and not osp.isfile(state_file):
        raise LAPQError(f'no search state {state_file} to resume: pass the '
                        '--work-dir of the interrupted run, or run without '
                        '--resume')
    init_distributed(cfg)
    with ranks_agree():
        if eval_quantized:
            if not osp.isfile(eval_quantized):
                raise LAPQError(f'quantized checkpoint {eval_quantized} does'
                                ' not exist: pass the lapq_quantized.pth of '
                                'a run')
            state.reload_from = eval_quantized
        else:
            state.checkpoint = cfg.get('load_from')
            if not state.checkpoint:
                raise LAPQError('no checkpoint: set load_from in the config '
                                'or pass --checkpoint PATH')
            check_checkpoint_exists(state.checkpoint)
        state.calib_dataset = check_datasets(cfg,
                                             quantize=not eval_quantized)
    cfg.load_from = None  # loaded strictly below, not leniently by mmengine

    work_dir_existed = osp.isdir(cfg.work_dir)
    runner = Runner.from_cfg(cfg)
    attach_quantizer(runner, quantizer)
    try:
        model = unwrap(runner.model)
        with ranks_agree():
            if not state.reloading:
                load_float_checkpoint(model, state.checkpoint)
                _check_layer_plan(model, quantizer)
        # Every stage (FP32 evaluation, search, final test) under the one
        # TF32 setting of the config.
        with tf32_mode(quantizer.allow_tf32), reading_data(), \
                stop_on_signals(runner.logger):
            if not state.reloading:
                # The run's memory format, chosen once: the FP32 evaluation
                # runs as fast as the quantized one.
                probe = next(iter(runner.test_loop.dataloader))
                inputs = model.data_preprocessor(probe, False)['inputs']
                quantizer.prepare(model, inputs)
                with ranks_agree():
                    quantizer.check_mixed(model, inputs)
            runner.test()
    except BaseException:
        # This run's log folder goes, and the work dir too if this run
        # made it, unless it holds a search state to resume from.
        shutil.rmtree(runner.log_dir, ignore_errors=True)
        if not work_dir_existed and not osp.exists(state_file):
            shutil.rmtree(cfg.work_dir, ignore_errors=True)
        raise
    return state
