"""Per-layer widths under a budget (lapq/allocation.py): the integer
linear program's answer is the brute-force optimum, the budget is never
exceeded, and impossible budgets are refused in one line."""
import itertools

import numpy as np
import pytest

from mmlapq.lapq.allocation import (LayerOptions, all_options, allocate,
                                    bops, bops_options, minimum_cost)


def brute_force(layers, budget):
    best = None
    for picks in itertools.product(*[range(len(l.options)) for l in layers]):
        cost = sum(l.cost[i] for l, i in zip(layers, picks))
        if cost > budget:
            continue
        loss = sum(l.loss[i] for l, i in zip(layers, picks))
        if best is None or loss < best[0] - 1e-12:
            best = (loss, picks)
    return best


def test_known_answer():
    """Two layers, W8 or W4: the budget fits one 8-bit layer, and the
    sensitive one (b) gets it."""
    opts = [(8, 8), (4, 8)]
    a = bops_options('a', 100, opts, [0.0, 0.01])
    b = bops_options('b', 100, opts, [0.0, 0.5])
    out = allocate([a, b], budget=bops(100, (8, 8)) + bops(100, (4, 8)))
    assert out.choice == {'a': (4, 8), 'b': (8, 8)}
    assert out.predicted_loss_increase == pytest.approx(0.01)
    assert out.cost == 100 * 8 * 8 + 100 * 4 * 8


@pytest.mark.parametrize('seed', range(20))
def test_the_program_finds_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    options = all_options((2, 3, 4, 8), (4, 8))
    layers = []
    for i in range(4):
        macs = int(rng.integers(1, 1000))
        # Fewer bits lose more: a sensitivity that falls with both widths.
        loss = [float(rng.random() * 2.0 ** -w * 2.0 ** -(a / 2))
                for w, a in options]
        layers.append(bops_options(f'l{i}', macs, options, loss))
    lowest = minimum_cost(layers)
    highest = sum(max(l.cost) for l in layers)
    budget = float(lowest + rng.random() * (highest - lowest))
    out = allocate(layers, budget)
    assert out.cost <= budget
    loss, _ = brute_force(layers, budget)
    assert out.predicted_loss_increase == pytest.approx(loss, abs=1e-9)


def test_budget_is_never_exceeded_at_the_edge():
    """At exactly the smallest cost, the only fitting allocation (every
    layer at its cheapest option) is returned."""
    options = all_options((2, 4), (4, 8))
    layers = [bops_options(f'l{i}', 64 * (i + 1), options,
                           [0.0, 0.1, 0.2, 0.3][::-1]) for i in range(3)]
    out = allocate(layers, minimum_cost(layers))
    assert out.cost == minimum_cost(layers)
    assert set(out.choice.values()) == {(2, 4)}


def test_a_layer_with_one_option_keeps_it():
    fixed = LayerOptions('first', ((8, 8),), (0.0,), (64.0,))
    free = bops_options('mid', 1, [(8, 8), (2, 4)], [0.0, 1.0])
    out = allocate([fixed, free], 64 + 8)
    assert out.choice == {'first': (8, 8), 'mid': (2, 4)}


def test_impossible_budget_is_one_line():
    layers = [bops_options('l', 10, [(4, 4), (8, 8)], [0.1, 0.0])]
    with pytest.raises(ValueError) as err:
        allocate(layers, 10 * 4 * 4 - 1)
    message = str(err.value)
    assert 'below 160' in message and 'raise the budget' in message
    assert '\n' not in message


@pytest.mark.parametrize('bits', [1, 17, 4.0])
def test_candidate_widths_outside_2_to_16_are_refused(bits):
    with pytest.raises(ValueError, match='outside 2..16'):
        all_options((bits, 4), (8, ))


def test_inconsistent_options_are_refused():
    with pytest.raises(ValueError, match='2 options, 1 losses'):
        LayerOptions('l', ((4, 4), (8, 8)), (0.1, ), (1.0, 2.0))


def test_float_budgets_at_their_minimum_are_met():
    """Float costs (a latency table in ms, bits times parameters) summed
    in another order than the pre-check's differ in the last bits: a
    budget equal to the smallest cost is met, not refused, on 200 random
    problems, and every answer is within the budget's float tolerance."""
    from mmlapq.lapq.allocation import within_budget
    refused = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        options = all_options((2, 3, 4, 8), (4, 8))
        layers = [LayerOptions(
            f'l{i}', tuple(options),
            tuple(float(v) for v in rng.random(len(options))),
            tuple(float(v) for v in rng.random(len(options)) * 0.37))
            for i in range(int(rng.integers(5, 40)))]
        budget = float(np.sum([min(l.cost) for l in reversed(layers)]))
        try:
            out = allocate(layers, budget)
        except ValueError:
            refused += 1
            continue
        assert within_budget(out.cost, budget)
    assert refused == 0
