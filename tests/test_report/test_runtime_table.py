"""The runtime benchmark's table (tools/benchmark_onnx.py and the stored
runs of docs/benchmark_onnx/): known answers on a made-up run."""
from mmlapq.report.runtime_table import runtime_caption, runtime_markdown


def _row(runtime, model, top1, ms, vs_fp32, vs_int8):
    return dict(runtime=runtime, model=model, top1=top1, b1_ms=ms,
                b1_vs_fp32=vs_fp32, b1_vs_int8=vs_int8)


def run(with_dynamic: bool) -> dict:
    rows = [_row('onnxruntime', 'FP32', 90.0, 4.0, 1.0, 2.0),
            _row('onnxruntime', 'onnxruntime int8', 89.5, 2.0, 0.5, 1.0),
            _row('onnxruntime', 'ours W4A4', 89.25, 1.5, 0.375, 0.75),
            dict(_row('openvino', 'ours W4A4', 89.25, 3.0, 0.5, None),
                 kernels={'u8': 8, 'f32': 1})]
    if with_dynamic:
        rows.insert(2, _row('onnxruntime', 'onnxruntime dynamic int8', 89.0,
                            3.0, 0.75, 1.5))
    return dict(rows=rows, threads=2, rounds=10, batch_sizes=[1],
                test_images=100)


def test_rows_cells_and_kernels():
    lines = runtime_markdown(run(False)).splitlines()
    assert lines[0] == ('| runtime | model | top-1 | batch 1: ms, x FP32, '
                        'x int8 |')
    assert lines[4] == '| onnxruntime | ours W4A4 | 89.25 | 1.50, 0.38, 0.75 |'
    # OpenVINO by its name; no int8 reference in the run: '-'
    assert lines[5] == '| OpenVINO | ours W4A4 | 89.25 | 3.00, 0.50, - |'
    assert lines[-1] == '- OpenVINO kernels of ours W4A4: f32 x1, u8 x8'


def test_the_dynamic_int8_column_is_the_ratio_of_milliseconds():
    lines = runtime_markdown(run(True)).splitlines()
    assert lines[0].endswith('batch 1: ms, x FP32, x int8, x dynamic int8 |')
    ours = next(line for line in lines
                if line.startswith('| onnxruntime | ours W4A4 |'))
    assert ours.endswith('1.50, 0.38, 0.75, 0.50 |')  # 1.5 ms / 3.0 ms
    openvino = next(line for line in lines if line.startswith('| OpenVINO'))
    assert openvino.endswith('3.00, 0.50, -, - |')  # no OpenVINO dynamic


def test_caption_names_the_machine_date_and_versions():
    assert runtime_caption(run(False)) == []  # a run that did not store it
    result = dict(run(False), env=dict(
        cpu='AMD EPYC (AVX-512 VNNI)', date='2026-12-06T18:00:00',
        onnxruntime='1.32.0', openvino='2026.4.1'))
    assert runtime_caption(result) == [
        'Measured on AMD EPYC (AVX-512 VNNI), 2026-12-06; onnxruntime '
        '1.32.0, OpenVINO 2026.4.1.']
