"""The table of a ``tools/benchmark_onnx.py`` run: per runtime and model,
top-1 and, per batch size, the milliseconds, the ratio to FP32 and to the
runtime's own int8 model (and to onnxruntime's dynamic int8 model where
the run has one). The tool prints it; ``tools/results.py`` writes the
stored runs' tables into docs/ with it."""
from typing import List

RUNTIME_NAMES = {'onnxruntime': 'onnxruntime', 'openvino': 'OpenVINO'}
DYNAMIC = 'onnxruntime dynamic int8'


def _dynamic_ms(result: dict) -> dict:
    """Batch size -> the milliseconds of onnxruntime's dynamic int8 model
    ({} where the run has none)."""
    row = next((r for r in result['rows'] if r['runtime'] == 'onnxruntime'
                and r['model'] == DYNAMIC), None)
    return {} if row is None else {b: row[f'b{b}_ms']
                                   for b in result['batch_sizes']}


def runtime_markdown(result: dict) -> str:
    """The run's table, then a line on how it was timed, per OpenVINO
    model the precisions of the kernels it ran, and the machine, date and
    versions where the run stored them."""
    sizes = result['batch_sizes']
    dynamic = _dynamic_ms(result)
    extra = ', x dynamic int8' if dynamic else ''
    lines = ['| runtime | model | top-1 | ' + ' | '.join(
        f'batch {b}: ms, x FP32, x int8{extra}' for b in sizes) + ' |',
        '|---' * (3 + len(sizes)) + '|']
    for row in result['rows']:
        cells = []
        for b in sizes:
            vs_int8 = row[f'b{b}_vs_int8']
            cell = [f"{row[f'b{b}_ms']:.2f}", f"{row[f'b{b}_vs_fp32']:.2f}",
                    '-' if vs_int8 is None else f'{vs_int8:.2f}']
            if dynamic:
                cell.append(f"{row[f'b{b}_ms'] / dynamic[b]:.2f}"
                            if row['runtime'] == 'onnxruntime' else '-')
            cells.append(', '.join(cell))
        runtime = RUNTIME_NAMES.get(row['runtime'], row['runtime'])
        lines.append(f"| {runtime} | {row['model']} | {row['top1']:.2f} | "
                     + ' | '.join(cells) + ' |')
    ratios = 'x int8 (x dynamic int8)' if dynamic else 'x int8'
    ort_models = '`quantize_static` (`quantize_dynamic`)' if dynamic \
        else '`quantize_static`'
    lines.append(f"\n{result['threads']} threads, median of "
                 f"{result['rounds']} rounds in turns; x FP32: median of the "
                 f'per-round ratios; {ratios}: ratio of the medians to the '
                 f"runtime's own int8 model (onnxruntime {ort_models}, "
                 f"NNCF); top-1 on {result['test_images']} test images.")
    kernels = [f"OpenVINO kernels of {row['model']}: "
               + ', '.join(f'{k} x{v}' for k, v in
                           sorted(row['kernels'].items()))
               for row in result['rows'] if row.get('kernels')]
    if kernels:
        lines += [''] + [f'- {line}' for line in kernels]
    lines += [f'\n{line}' for line in runtime_caption(result)]
    return '\n'.join(lines)


def runtime_caption(result: dict) -> List[str]:
    """Where and with what the run was measured (runs that stored it)."""
    env = result.get('env')
    if not env:
        return []
    versions = ', '.join(f'{name} {env[key]}' for name, key in (
        ('onnxruntime', 'onnxruntime'), ('OpenVINO', 'openvino'),
        ('NNCF', 'nncf')) if env.get(key))
    return [f"Measured on {env['cpu']}, {env['date'][:10]}; {versions}."]
