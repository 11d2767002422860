"""Assemble the run report from what the hooks left in the message hub, and
write every output file of a run into the work dir."""
import os.path as osp

from ..quant import quantizers
from ..report import (collect_env, layer_rows, plot_run, summary_table,
                      write_json, write_markdown)
from .quantizer import tf32_flags
from .hooks import (INFO, get_quantizer, metrics_top,
                    save_quantized_checkpoint, unwrap)

REPORT_JSON, REPORT_MD = 'lapq_report.json', 'lapq_report.md'


def build_report(runner, metrics: dict) -> dict:
    hub = runner.message_hub
    result = hub.get_info(INFO + 'result')
    plans = hub.get_info(INFO + 'plans')
    model = unwrap(runner.model)
    summary = result.summary()
    grids = {n: q.grid.kind for n, q in quantizers(model).items()}
    device = next(model.parameters()).device
    init = dict(summary['init'], **metrics_top(
        hub.get_info(INFO + 'init_metrics')), seconds=result.seconds['init'])
    from mmengine import dist
    return dict(
        config=runner.cfg.filename,
        world_size=dist.get_world_size(),
        checkpoint=hub.get_info(INFO + 'checkpoint'),
        fp32=dict(metrics_top(hub.get_info(INFO + 'fp32')),
                  calib_loss=summary['fp32_calib_loss']),
        quantized=metrics_top(metrics),
        init=init,
        lapq=summary['lapq'],
        rounding=summary['rounding'],
        calibration=hub.get_info(INFO + 'calib_record'),
        settings=get_quantizer(runner).settings(),
        layers=layer_rows(plans, result.clips, result.init_clips, grids),
        seconds=result.seconds,
        metrics=dict(metrics or {}),
        env=dict(collect_env(device), tf32=tf32_flags()))


def write_run_outputs(runner, report: dict, save_checkpoint: bool = True,
                      plots: bool = True) -> dict:
    """Plots, checkpoint, markdown, then the json last (its presence means
    the run finished). Returns the paths and the summary table."""
    work_dir = runner.work_dir
    result = runner.message_hub.get_info(INFO + 'result')
    files = dict(table=summary_table(report))
    if plots:
        files['plots'] = plot_run(result, osp.join(work_dir, 'plots'))
    if save_checkpoint:
        files['checkpoint'] = save_quantized_checkpoint(
            runner, osp.join(work_dir, 'lapq_quantized.pth'))
        report['quantized_checkpoint'] = files['checkpoint']
    files['md'] = osp.join(work_dir, REPORT_MD)
    write_markdown(report, files['md'])
    files['json'] = osp.join(work_dir, REPORT_JSON)
    write_json(report, files['json'])
    return files
