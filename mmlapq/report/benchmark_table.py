"""The benchmark's markdown table (docs/benchmark*/benchmark.md)."""
from typing import List


def benchmark_markdown(rows: List[dict], header: dict) -> str:
    env = header['env']
    lines = [f"# Benchmark: {header['config']}", '',
             f"checkpoint `{header['checkpoint']}`; calibration "
             f"{header['calib_images']} images (training split); test "
             f"{header['test_images']} images; {env['device']}; "
             f"torch {env['torch']}, mmcls {env['mmcls']}, mmengine "
             f"{env['mmengine']}, mmlapq {env['mmlapq']}; {env['date']}", '',
             '| W/A | method | top-1 | top-5 | calib loss | p | evals | '
             'seconds |', '|---|---|---|---|---|---|---|---|']

    def fmt(value, digits=2):
        return '-' if value is None else f'{value:.{digits}f}'
    for r in rows:
        wa = 'FP32' if r['method'] == 'fp32' \
            else f"W{r['w_bits']}A{r['a_bits']}"
        lines.append(f"| {wa} | {r['method']} | {fmt(r['top1'])} | "
                     f"{fmt(r.get('top5'))} | {fmt(r['calib_loss'], 4)} | "
                     f"{fmt(r.get('p'))} | {r['func_evals']} | "
                     f"{r['seconds']:.1f} |")
    return '\n'.join(lines) + '\n'
