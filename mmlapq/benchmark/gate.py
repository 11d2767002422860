"""The CI gate of ``tools/benchmark.py --quick``: what the quick grid runs,
and the margins LAPQ must keep on it."""
import math
from typing import List

# The CI gate of ``tools/benchmark.py --quick`` (128 calibration images,
# 1000 test images, 120 evaluations). Measured on 2026-11-28 (2 CPU
# threads): W4A4 lp init loss 0.1512 -> LAPQ 0.1307 (13.6% lower), top-1
# 93.50 vs FP32 94.40; W3A3 0.2276 -> 0.1835 (19.4% lower), 91.80 vs 94.40.
# The loss is the search's lowest calibration loss: the held-out guard may
# rightly keep the start, but the search itself must still find lower
# losses. The margins leave room for another machine's float rounding, and
# trip when the search stops improving on its init (a search that returns
# its starting point gives 0%) or the quantized model breaks.
# {(w_bits, a_bits): (min relative loss drop below the Lp init,
#                     max top-1 points below FP32)}
QUICK_GATE = {(4, 4): (0.05, 2.0), (3, 3): (0.10, 4.0)}


def quick_gate(rows: List[dict]) -> List[str]:
    """What the quick benchmark's rows fail of :data:`QUICK_GATE` (and any
    NaN top-1); an empty list when everything passes."""
    problems = [f"W{r['w_bits']}A{r['a_bits']} {r['method']}: top-1 is NaN"
                for r in rows if r['top1'] is None or math.isnan(r['top1'])]
    fp32 = next(r['top1'] for r in rows if r['method'] == 'fp32')
    for r in rows:
        gate = QUICK_GATE.get((r['w_bits'], r['a_bits']))
        if r['method'] != 'lapq' or gate is None:
            continue
        min_drop, max_points = gate
        name = f"W{r['w_bits']}A{r['a_bits']} lapq"
        searched = r.get('search_min_loss', r['calib_loss'])
        drop = 1 - searched / r['init_calib_loss']
        if drop < min_drop:
            problems.append(
                f"{name}: the search's lowest calibration loss "
                f"{searched:.4f} is only {100 * drop:.1f}% below its Lp "
                f"init's {r['init_calib_loss']:.4f} (needs "
                f"{100 * min_drop:.0f}%)")
        if r['top1'] < fp32 - max_points:
            problems.append(f"{name}: top-1 {r['top1']:.2f} is more than "
                            f"{max_points} points below FP32's {fp32:.2f}")
    missing = [wa for wa in QUICK_GATE if not any(
        r['method'] == 'lapq' and (r['w_bits'], r['a_bits']) == wa
        for r in rows)]
    problems += [f'W{w}A{a} lapq: no row to check' for w, a in missing]
    return problems


# What ``--quick`` runs (the CI job): a small grid on a slice of the data.
QUICK = dict(methods=['max', 'l2', 'lp', 'lapq'], bits=['w4a4', 'w3a3'],
             calib_images=128, test_images=1000, max_evals=120)
