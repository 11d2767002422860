"""Sensitivity for mixed precision (lapq/sensitivity.py): the probes through
the chain's step inputs give the numbers of full forwards of the model, on
ResNet-18 and MobileNetV2 (whose residual blocks' first convs read the
block's quantizer and get one of their own for a probe), and leave the model
as they found it."""
import functools

import pytest
import torch
from test_chain import random_imagenet_model

import mmlapq  # noqa: F401
from mmlapq.lapq import CalibrationObjective, CalibrationSet, FullForward
from mmlapq.lapq.chain import build_chain, classifier_logits
from mmlapq.lapq.initialize import ClipInitializer, InitSettings
from mmlapq.lapq.sensitivity import (INPUT, WEIGHT, loss_of_widths,
                                     measure_sensitivity)
from mmlapq.quant import QuantSettings, quant_layers, quantize_model
from mmlapq.quant.control import get_clips

# layers probed: the stem, a residual block's first conv (it reads the
# block's 8-bit quantizer), a depthwise or downsample conv, the last conv
PROBED = {
    'resnet18_w4a4': ['backbone.conv1', 'backbone.layer1.0.conv1',
                      'backbone.layer2.0.downsample.0',
                      'backbone.layer4.1.conv2'],
    'mobilenet-v2_w4a4': ['backbone.conv1.conv',
                          'backbone.layer2.1.conv.0.conv',
                          'backbone.layer3.0.conv.1.conv',
                          'backbone.conv2.conv'],
}


@functools.lru_cache(maxsize=None)
def base_model(config):
    """A random ImageNet model (test_chain's) at 8 bits with max clips on
    32 px images."""
    model, inputs, labels = random_imagenet_model(config, 32)
    quantize_model(model, QuantSettings(w_bits=8, a_bits=8))
    calib = CalibrationSet(inputs, labels)
    chain = CalibrationObjective(build_chain(model, inputs[0]), calib,
                                 model=model, cache_bytes=0)
    ClipInitializer(chain, InitSettings(method='max', mode='independent'))()
    full = CalibrationObjective([FullForward(model, classifier_logits)],
                                calib, model=model, cache_bytes=0)
    return model, chain, full


@pytest.mark.parametrize('config', list(PROBED))
def test_chain_probes_equal_full_forward_probes(config):
    model, chain, full = base_model(config)
    candidates = {name: {WEIGHT: (2, 4, 8), INPUT: (4, 8)}
                  for name in PROBED[config]}
    clips = get_clips(model)
    first_conv = quant_layers(model)[PROBED[config][1]]
    assert first_conv.input_quantizer is None  # reads its block's
    cached = measure_sensitivity(chain, model, candidates)
    fulls = measure_sensitivity(full, model, candidates)
    # no step input kept (cache_bytes=0), or only the small late ones:
    # the same numbers (two layers, one width each)
    some = {name: {WEIGHT: (2, ), INPUT: (4, )}
            for name in PROBED[config][1::2]}
    for bound in (0, 40_000):
        bounded = measure_sensitivity(chain, model, some, cache_bytes=bound)
        for name, tensors in some.items():
            for tensor, (bits, ) in tensors.items():
                assert bounded.of(name, tensor, bits) == pytest.approx(
                    cached.of(name, tensor, bits), abs=1e-7)
    assert cached.base_loss == pytest.approx(fulls.base_loss, rel=1e-6)
    for name in PROBED[config]:
        for tensor in (WEIGHT, INPUT):
            for bits, value in cached.increase[name][tensor].items():
                assert value == pytest.approx(
                    fulls.increase[name][tensor][bits], abs=1e-6), \
                    (name, tensor, bits)
    assert cached.probes == fulls.probes == 4 * 3
    # the chain ran fewer steps than a full forward per probe would
    assert cached.steps_run < cached.full_steps
    # every probe moved the loss (random labels: up or down)
    assert all(abs(cached.of(n, t, b)) > 1e-7 for n in PROBED[config]
               for t, b in ((WEIGHT, 2), (WEIGHT, 4), (INPUT, 4)))
    # the model is as it was: clips, grids, the shared quantizer
    assert first_conv.input_quantizer is None
    assert all(torch.equal(a, b) for a, b in
               zip(clips.values(), get_clips(model).values()))
    assert all(q.bits == 8 for q in chain.quantizers.values())


def test_a_pair_of_probes_is_measured_together():
    """loss_of_widths applies several probes at once; with one probe it is
    that probe's loss, and it restores the base state."""
    model, chain, _ = base_model('resnet18_w4a4')
    name = 'backbone.layer1.0.conv1'
    single = measure_sensitivity(chain, model, {name: {INPUT: (4, )}})
    one = loss_of_widths(chain, model, {(name, INPUT): 4})
    assert one - single.base_loss == pytest.approx(single.of(name, INPUT, 4),
                                                   abs=1e-7)
    both = loss_of_widths(chain, model, {(name, INPUT): 4,
                                         (name, WEIGHT): 2})
    assert both != one
    assert chain.loss_from(0, chain.calib.inputs) == pytest.approx(
        single.base_loss, abs=0)
    assert quant_layers(model)[name].input_quantizer is None


def test_an_unknown_layer_is_refused():
    model, chain, _ = base_model('resnet18_w4a4')
    with pytest.raises(ValueError, match='no quantized layer named'):
        measure_sensitivity(chain, model, {'backbone.nope': {WEIGHT: (2, )}})


def test_cache_bytes_bounds_the_step_inputs_held():
    """With cache_bytes=0 the sensitivity holds no step's output for the
    whole calibration set: at any step, the earlier steps' outputs alive
    are at most the batch in flight (counted through weak references);
    with room for them, they are kept (and the probes run fewer steps)."""
    import weakref
    model, _, _ = base_model('resnet18_w4a4')
    inputs = [torch.randn(2, 3, 32, 32, generator=torch.Generator()
                          .manual_seed(i)) for i in range(8)]
    labels = [torch.randint(0, 1000, (2, )) for _ in range(8)]
    calib = CalibrationSet(inputs, labels)
    steps = build_chain(model, inputs[0])
    chain = CalibrationObjective(steps, calib, model=model, cache_bytes=0)
    candidates = {'backbone.layer2.0.downsample.0': {WEIGHT: (4, )},
                  'backbone.layer4.1.conv2': {INPUT: (4, )}}
    outputs, peak = [], [0]

    def alive_bytes():  # an in-place step returns its input: once
        alive = {t.data_ptr(): t.numel() * t.element_size()
                 for t in (ref() for ref in outputs) if t is not None}
        return sum(alive.values())

    def before(step, args):
        peak[0] = max(peak[0], alive_bytes())

    def after(step, args, out):
        outputs.append(weakref.ref(out))

    with torch.no_grad():
        stem = steps[0](inputs[0])  # the largest step output
    batch = stem.numel() * stem.element_size()
    del stem
    handles = [h for step in steps[:-1] for h in (
        step.register_forward_pre_hook(before),
        step.register_forward_hook(after))]
    try:
        none_kept = measure_sensitivity(chain, model, candidates,
                                        cache_bytes=0)
        bounded_peak = peak[0]
        outputs.clear()
        peak[0] = 0
        all_kept = measure_sensitivity(chain, model, candidates,
                                       cache_bytes=1 << 30)
    finally:
        for h in handles:
            h.remove()
    assert bounded_peak <= batch, (bounded_peak, batch)  # the one in flight
    assert peak[0] > 4 * batch  # kept: a whole step's outputs
    assert none_kept.steps_run > all_kept.steps_run
    for name, tensors in candidates.items():
        for tensor, widths in tensors.items():
            assert none_kept.of(name, tensor, widths[0]) == pytest.approx(
                all_kept.of(name, tensor, widths[0]), abs=1e-7)
