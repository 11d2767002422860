"""The whole pipeline on CUDA (marker ``gpu``): wrap, Lp init with the p
sweep, GPTQ (batched depthwise too), the chain cache, a short Powell search
under the held-out guard, evaluation and the --eval-quantized reload. The
TF32 switches are set only inside ``tf32_mode`` blocks, which restore them.
Reported as skipped, with the reason, on a machine without CUDA.

    python -m pytest -m gpu tests -rs
"""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from toy import toy_data, trained_toy_chain

from mmlapq.lapq import (CalibrationObjective, CalibrationSet, InitSettings,
                         RoundingSettings, SearchSettings,
                         chain_of_sequential, run_lapq)
from mmlapq.quant import (AbsHistogram, Grid, QuantConv2d, QuantSettings,
                          quantize_model)
from mmlapq.quant.gptq import HessianAccumulator, gptq_codes
from mmlapq.quant.precision import tf32_flags, tf32_mode

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'lapq', 'vgg11bn_fmnist_w4a4.py')

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason='no CUDA device on this machine'),
]


def lapq_on(device: str, bits: int = 3):
    """LAPQ on the toy with every stage a GPU run uses: sequential Lp init
    with the p sweep, GPTQ rounding, the chain cache, a Powell search under
    the held-out guard, empirical bias correction."""
    model = trained_toy_chain(0).to(device)
    quantize_model(model, QuantSettings(w_bits=bits, a_bits=bits,
                                        first_last='same',
                                        bias_correction='empirical'))
    x, y = toy_data(256, seed=1)
    calib = CalibrationSet.from_tensors(x, y, 64).to(device)
    hx, hy = toy_data(128, seed=7)
    holdout = CalibrationSet.from_tensors(hx, hy, 64).to(device)
    objective = CalibrationObjective(chain_of_sequential(model), calib,
                                     model=model)
    result = run_lapq(objective, InitSettings(p_grid=[2.0, 3.0, 4.0]),
                      SearchSettings(max_evals=40), 'empirical',
                      rounding=RoundingSettings('gptq'), holdout=holdout)
    return model, objective, result


def test_lapq_pipeline_on_cuda_matches_cpu():
    with tf32_mode(False):
        (gpu_model, gpu_obj, gpu), (cpu_model, _, cpu) = (
            lapq_on('cuda'), lapq_on('cpu'))
    assert gpu.p_star == pytest.approx(cpu.p_star, rel=1e-3)
    assert gpu.init_loss == pytest.approx(cpu.init_loss, rel=1e-3)
    assert gpu.final_loss < gpu.init_loss
    assert all(c.device.type == 'cuda' for c in gpu.clips.values())
    # GPTQ on the GPU: codes on the grid, and (float64 Hessians) the CPU's
    # codes but for rare ties.
    pairs = [(g.weight_codes, c.weight_codes) for g, c in zip(
        gpu_model.modules(), cpu_model.modules())
        if getattr(g, 'weight_codes', None) is not None]
    assert pairs and all(g.device.type == 'cuda' for g, _ in pairs)
    same = sum(int((g.cpu() == c).sum()) for g, c in pairs)
    total = sum(c.numel() for _, c in pairs)
    assert same >= 0.99 * total
    # The guard ran on the GPU and followed its rule.
    assert sum(c['kept'] for c in gpu.search.checkpoints) == 1
    # The chain cache on the GPU gives the uncached loss.
    uncached = CalibrationObjective(gpu_obj.steps, gpu_obj.calib,
                                    model=gpu_model, cache_bytes=0)
    assert gpu_obj.loss() == pytest.approx(uncached.loss(), rel=1e-6)


def test_tf32_switches_are_restored():
    before = tf32_flags()
    with tf32_mode(True):
        assert tf32_flags() == dict(cuda_matmul=True, cudnn=True)
    assert tf32_flags() == before


def test_batched_depthwise_gptq_on_cuda():
    conv = QuantConv2d.from_float(torch.nn.Conv2d(64, 64, 3, groups=64),
                                  Grid(3), None, per_channel=True).cuda()
    conv.weight_quantizer.set_alpha(
        conv.weight.detach().abs().amax((1, 2, 3)))
    acc = HessianAccumulator(conv)
    acc.add(torch.randn(8, 64, 9, 9, device='cuda'))
    codes = gptq_codes(conv, acc.hessian())
    assert codes.device.type == 'cuda' and codes.shape == conv.weight.shape
    assert int(codes.abs().max()) <= 3 and torch.equal(codes, codes.round())


def test_histogram_counts_exact_on_cuda():
    x = torch.zeros((1 << 24) + 3, device='cuda')
    x[:2] = 1.0
    hist = AbsHistogram.of(x, num_bins=8)
    assert int(hist.counts[0]) == (1 << 24) + 1


@pytest.mark.slow
def test_quantize_tool_and_reload_on_cuda(tmp_path):
    if not osp.isfile(osp.join(REPO, 'data', 'fashion_mnist',
                               't10k-images-idx3-ubyte')):
        pytest.skip('Fashion-MNIST is not set up: run bash tools/setup.sh')
    work_dir = str(tmp_path / 'run')
    opts = ['--cfg-options', 'test_dataloader.dataset.indices=1000']
    proc = subprocess.run(
        [sys.executable, 'tools/quantize.py', CONFIG, '--work-dir', work_dir,
         '--calib-images', '128', '--max-evals', '40', *opts,
         'quantizer.init.p_grid=[2.0,3.0,4.0]'],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.load(open(osp.join(work_dir, 'lapq_report.json')))
    assert 'cpu' not in report['env']['device']  # the run was on the GPU
    assert report['quantized']['top1'] >= report['fp32']['top1'] - 1.0
    proc = subprocess.run(
        [sys.executable, 'tools/quantize.py', CONFIG, '--eval-quantized',
         osp.join(work_dir, 'lapq_quantized.pth'), '--work-dir',
         str(tmp_path / 'reload'), *opts],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines()
            if ln.startswith('quantized model')][0]
    assert eval(line.split(':', 1)[1])['accuracy/top1'] == \
        report['quantized']['top1']
    print(f"GPU run: FP32 {report['fp32']['top1']}, W4A4 "
          f"{report['quantized']['top1']}, {report['lapq']['ms_per_eval']:.1f}"
          f" ms per loss evaluation on {report['env']['device']}")
