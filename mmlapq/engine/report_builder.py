"""The run report, assembled from the run's state, and every output file of
a run written into the work dir."""
import os.path as osp

from ..fileio import atomic_write
from ..quant import quantizers
from ..report import layer_rows, plot_run, summary_table, write_markdown
from ..lapq.interrupt import stop_reason
from .env import collect_run_env
from .evaluation import metrics_top
from .quantized_checkpoint import (QUANTIZED_CHECKPOINT,
                                   save_quantized_checkpoint)
from .run_state import quantizer_of, unwrap
from ..quant.precision import tf32_flags

REPORT_JSON, REPORT_MD = 'lapq_report.json', 'lapq_report.md'


def dump_json(obj, path: str) -> None:
    """``obj`` as indented JSON (mmengine.dump), written atomically."""
    import mmengine
    atomic_write(path, lambda tmp: mmengine.dump(obj, tmp, indent=2))


def build_report(runner, metrics: dict) -> dict:
    from mmengine import dist
    quantizer = quantizer_of(runner)
    state = quantizer.state
    result, model = state.result, unwrap(runner.model)
    summary = result.summary()
    grids = {n: q.grid.kind for n, q in quantizers(model).items()}
    device = next(model.parameters()).device
    init = dict(summary['init'], **metrics_top(state.init_metrics),
                seconds=result.seconds['init'])
    return dict(
        config=runner.cfg.filename,
        world_size=dist.get_world_size(),
        # The signal that stopped the run early (None: it ran to the end).
        interrupted=stop_reason(),
        resumed=result.resumed,
        checkpoint=state.checkpoint,
        fp32=dict(metrics_top(state.fp32_metrics),
                  calib_loss=summary['fp32_calib_loss']),
        quantized=metrics_top(metrics),
        init=init,
        lapq=summary['lapq'],
        rounding=summary['rounding'],
        equalization=state.equalization,
        layernorms=state.layernorms,
        mixed=state.mixed,
        calibration=state.calib_record,
        settings=quantizer.settings(),
        channels_last=bool(state.channels_last),
        layers=layer_rows(state.plans, result.clips, result.init_clips,
                          grids),
        seconds=result.seconds,
        metrics=dict(metrics or {}),
        env=dict(collect_run_env(device), tf32=tf32_flags()))


def write_run_outputs(runner, report: dict, save_checkpoint: bool = True,
                      plots: bool = True) -> dict:
    """Plots, checkpoint, markdown, then the json last (its presence means
    the run finished). Returns the paths and the summary table."""
    work_dir = runner.work_dir
    quantizer = quantizer_of(runner)
    files = dict(table=summary_table(report))
    if plots:
        files['plots'] = plot_run(quantizer.state.result,
                                  osp.join(work_dir, 'plots'),
                                  mixed=quantizer.state.mixed)
    if save_checkpoint:
        files['checkpoint'] = save_quantized_checkpoint(
            unwrap(runner.model), quantizer, quantizer.state.plans,
            osp.join(work_dir, QUANTIZED_CHECKPOINT), runner.cfg.filename)
        report['quantized_checkpoint'] = files['checkpoint']
    files['md'] = osp.join(work_dir, REPORT_MD)
    write_markdown(report, files['md'])
    files['json'] = osp.join(work_dir, REPORT_JSON)
    dump_json(report, files['json'])
    return files
