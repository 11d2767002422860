"""Cross-layer equalization (Nagel et al., "Data-Free Quantization through
Weight Equalization and Bias Correction", 2019), on a float model whose
BatchNorms are folded.

For two convs joined by ops that commute with a positive per-channel scale
(ReLU, max pool, identity; nothing else reads the tensors between them),
dividing output channel i of the first (weights and bias) by s_i and
multiplying input channel i of the second by s_i leaves the model's output
unchanged. With s_i = sqrt(r1_i / r2_i), r1_i the range of the first conv's
filter i and r2_i that of the second conv's input channel i, both become
sqrt(r1_i r2_i): a depthwise conv whose filters span orders of magnitude
gets filters of similar range, which one per-tensor (or per-channel) 4-bit
grid holds far better. Chains (MobileNetV2's expand -> depthwise ->
project) are iterated until the scales stop moving.

Pairs come from the model's own forward on a probe batch: each conv's input
is traced back through the modules that produced it (tensor identity and
version, so an in-place add in between breaks the trace), and every tensor
on the path must have one reader in the autograd graph, which sees the
functional ops (a residual add, a shortcut) that module hooks do not. Each
candidate is then checked by scaling it at random and comparing the
model's output.

ReLU6 is not positive-homogeneous (its bound 6 would move to 6 / s_i).
``relu6='relu'`` replaces it by ReLU in the pairs it joins, as the paper
does for MobileNetV2 (the float model then differs where a pre-activation
exceeds 6: the quantizer's clip bounds those values anyway);
``relu6='keep'`` leaves such pairs alone.

Bias absorption (the paper's section 4.2, ``absorb_bias``): where a
channel's pre-activation stays above c_i > 0 on the probe, c_i moves from
the first conv's bias to the second conv's (through its weights), which
narrows the range the activation quantizer must cover. Exact while the
pre-activation stays above c_i and the second conv does not zero-pad; only
pairs through a ReLU whose second conv has no padding get it.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from .grids import check_choice, check_type, settings_from_option
from .qmodules import has_same_padding

RELU6_MODES = ('relu', 'keep')
# Ops between the two convs that commute with a positive per-channel scale.
_HOMOGENEOUS = (nn.ReLU, nn.Identity, nn.MaxPool2d, nn.Dropout)


@dataclass
class EqualizeSettings:
    max_iters: int = 100        # sweeps over all pairs
    tol: float = 1e-4           # stop when every |log s| is below it
    relu6: str = 'relu'         # 'relu' | 'keep' (see the module doc)
    absorb_bias: bool = False

    def __post_init__(self):
        check_type('equalize.max_iters', self.max_iters, int)
        check_type('equalize.tol', self.tol, float)
        check_type('equalize.absorb_bias', self.absorb_bias, bool)
        check_choice('equalize.relu6', self.relu6, RELU6_MODES)
        if self.max_iters < 1:
            raise ValueError(f'equalize.max_iters={self.max_iters} must be '
                             '>= 1')

    @classmethod
    def from_option(cls, option: Union[bool, dict, None]
                    ) -> Optional['EqualizeSettings']:
        """The settings of ``quantizer.equalize`` (False/None: off, True:
        defaults, a dict: these fields)."""
        return settings_from_option(cls, option, 'equalize', 'max_iters, tol, relu6, absorb_bias')


def _module_names(model: nn.Module) -> Dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def _trace(model: nn.Module, forward: Callable[[], object]):
    """The leaf modules' calls of ``forward()`` in order, each as (module,
    [(id, version) of its tensor inputs], (id, version) of its output,
    the output's autograd node), and how many autograd nodes read each
    node. Tensors are kept alive during the forward so that no id is
    reused; the autograd graph sees every reader of a tensor, including
    functional ops (an add) that no module hook sees."""
    calls, alive = [], []

    def key(t):
        return (id(t), t._version)

    def pre(module, inputs):
        alive.extend(inputs)
        calls.append([module, [key(t) for t in inputs
                               if isinstance(t, torch.Tensor)], None, None])

    def post(module, inputs, output):
        if isinstance(output, torch.Tensor):
            alive.append(output)
            for call in reversed(calls):
                if call[0] is module and call[2] is None:
                    call[2], call[3] = key(output), output.grad_fn
                    break

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [h for m in leaves for h in (m.register_forward_pre_hook(pre),
                                           m.register_forward_hook(post))]
    try:
        with torch.enable_grad():
            out = forward()
    finally:
        for h in handles:
            h.remove()
    readers: Dict[object, int] = {}
    roots = [out] if isinstance(out, torch.Tensor) else \
        [t for t in out if isinstance(t, torch.Tensor)]
    stack = [t.grad_fn for t in roots if t.grad_fn is not None]
    seen = set(stack)
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            readers[child] = readers.get(child, 0) + 1
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return [tuple(c) for c in calls], readers


def find_pairs(model: nn.Module, forward: Callable[[], object],
               relu6: str = 'relu') -> List[Tuple[nn.Conv2d, List[nn.Module],
                                                  nn.Conv2d]]:
    """Candidate (first conv, modules between, second conv) from the call
    order of ``forward()`` (see the module doc): every tensor on the path
    has exactly one reader. Verified afterwards by rescaling."""
    calls, readers = _trace(model, forward)
    # output -> (module, its inputs, autograd node) of the call that made
    # it; a module that returns its input unchanged (Identity, Dropout in
    # eval) makes nothing new and is skipped.
    producer = {}
    for module, ins, out, node in calls:
        if out is not None and out not in ins:
            producer[out] = (module, ins, node)
    times_called = {}
    for module, *_ in calls:
        times_called[id(module)] = times_called.get(id(module), 0) + 1
    allowed = _HOMOGENEOUS + ((nn.ReLU6, ) if relu6 == 'relu' else ())
    pairs = []
    for module, ins, _, _ in calls:
        # A conv called twice would be scaled for both calls.
        if not isinstance(module, nn.Conv2d) or len(ins) != 1 or \
                times_called[id(module)] != 1:
            continue
        between, key = [], ins[0]
        while key in producer:
            source, source_inputs, node = producer[key]
            if node is None or readers.get(node, 0) != 1:
                break  # read by something else too (a shortcut, an add)
            if isinstance(source, nn.Conv2d):
                if source.out_channels == module.in_channels and \
                        times_called[id(source)] == 1 and \
                        source is not module:
                    pairs.append((source, between[::-1], module))
                break
            if not isinstance(source, allowed) or len(source_inputs) != 1:
                break
            between.append(source)
            key = source_inputs[0]
    return pairs


def _output_ranges(conv: nn.Conv2d) -> torch.Tensor:
    return conv.weight.detach().abs().flatten(1).amax(1)


def _input_view(conv: nn.Conv2d) -> torch.Tensor:
    """The weight as [groups, out/groups, in/groups, k...]: input channel i
    is [i // (in/g), :, i % (in/g)]."""
    w = conv.weight
    g = conv.groups
    return w.view(g, w.shape[0] // g, w.shape[1], *w.shape[2:])


def _input_ranges(conv: nn.Conv2d) -> torch.Tensor:
    v = _input_view(conv).detach().abs()
    # [g, out/g, in/g, ...] -> max over out/g and the kernel -> [g, in/g]
    r = v.transpose(1, 2).flatten(2).amax(2)
    return r.reshape(-1)


@torch.no_grad()
def scale_pair(first: nn.Conv2d, second: nn.Conv2d,
               scale: torch.Tensor) -> None:
    """Divide output channel i of ``first`` by scale[i] and multiply input
    channel i of ``second`` by it (exact for a homogeneous path)."""
    scale = scale.to(first.weight.dtype)
    first.weight.div_(scale.view(-1, *[1] * (first.weight.dim() - 1)))
    if first.bias is not None:
        first.bias.div_(scale)
    view = _input_view(second)
    g = second.groups
    s = scale.view(g, 1, -1, *[1] * (second.weight.dim() - 2))
    view.mul_(s)


def equalization_scale(first: nn.Conv2d, second: nn.Conv2d) -> torch.Tensor:
    """sqrt(r1 / r2) per channel; 1 where either range is zero."""
    r1, r2 = _output_ranges(first), _input_ranges(second)
    ok = (r1 > 0) & (r2 > 0)
    scale = torch.ones_like(r1)
    scale[ok] = torch.sqrt(r1[ok] / r2[ok])
    return scale


def _logits(forward: Callable[[], object]) -> torch.Tensor:
    with torch.no_grad():
        out = forward()
    return out if isinstance(out, torch.Tensor) else torch.as_tensor(out)


def _scaled_output(forward, first: nn.Conv2d, second: nn.Conv2d,
                   scale: torch.Tensor) -> torch.Tensor:
    """The model's output with the pair scaled by ``scale``; the
    parameters are restored bit for bit afterwards."""
    params = [t for t in (first.weight, first.bias, second.weight)
              if t is not None]
    saved = [t.detach().clone() for t in params]
    scale_pair(first, second, scale)
    try:
        return _logits(forward)
    finally:
        with torch.no_grad():
            for t, value in zip(params, saved):
                t.copy_(value)


def _verified(pairs, forward, relu6: str, generator: torch.Generator
              ) -> list:
    """The pairs whose random rescaling leaves the output unchanged (with
    the pair's ReLU6 computing ReLU, when it has one: that is what the
    equalized model will compute)."""
    kept, unscaled = [], _logits(forward)
    for first, between, second in pairs:
        scale = torch.empty(first.out_channels).uniform_(
            0.5, 2.0, generator=generator)
        swapped = _swap_relu6(between) if relu6 == 'relu' else []
        try:
            # The unscaled output changes only when a ReLU6 was swapped.
            reference = _logits(forward) if swapped else unscaled
            scaled = _scaled_output(forward, first, second, scale)
        finally:
            _restore_relu6(swapped)
        tol = 1e-3 * float(reference.abs().max().clamp_min(1e-6))
        if bool(((scaled - reference).abs() <= tol).all()):
            kept.append((first, between, second))
    return kept


def _swap_relu6(between: List[nn.Module]) -> list:
    """Make the ReLU6 modules in ``between`` compute ReLU (in place, by
    class); returns them for :func:`_restore_relu6`."""
    swapped = [m for m in between if isinstance(m, nn.ReLU6)]
    for m in swapped:
        m.min_val, m.max_val = 0.0, float('inf')
    return swapped


def _restore_relu6(swapped: list) -> None:
    for m in swapped:
        m.min_val, m.max_val = 0.0, 6.0


def replace_relu6(model: nn.Module, names: List[str]
                  ) -> Dict[int, nn.Module]:
    """Replace the named ReLU6 modules by ReLU (same inplace flag): what
    equalization through them did; also how a reload rebuilds it. Returns
    {id(old module): new module}."""
    new = {}
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, nn.ReLU6):
            raise ValueError(f'{name} is not a ReLU6 ({type(module).__name__}'
                             '): the model is not the one that was equalized')
        new[id(module)] = nn.ReLU(inplace=module.inplace)
        model.set_submodule(name, new[id(module)])
    return new


def equalize(model: nn.Module, forward: Callable[[], object],
             settings: EqualizeSettings = EqualizeSettings()) -> dict:
    """Equalize every verified pair of ``model`` in place (BN folded
    first); ``forward()`` runs the model on a probe batch and returns its
    output. Returns a JSON-ready record: pairs, ReLU6 modules replaced,
    sweeps, the last largest |log s|, biases absorbed."""
    generator = torch.Generator().manual_seed(0)
    candidates = find_pairs(model, forward, settings.relu6)
    pairs = _verified(candidates, forward, settings.relu6, generator)
    names = _module_names(model)
    relu6 = sorted({names[id(m)] for _, between, _ in pairs
                    for m in between if isinstance(m, nn.ReLU6)})
    new = replace_relu6(model, relu6)
    pairs = [(a, [new.get(id(m), m) for m in between], b)
             for a, between, b in pairs]
    names = _module_names(model)
    largest, sweeps = 0.0, 0
    for sweeps in range(1, settings.max_iters + 1):
        largest = 0.0
        for first, _, second in pairs:
            scale = equalization_scale(first, second)
            scale_pair(first, second, scale)
            largest = max(largest, float(scale.log().abs().max()))
        if largest < settings.tol:
            break
    absorbed = 0
    if settings.absorb_bias:
        absorbed = _absorb_biases(model, pairs, forward)
    return dict(pairs=[dict(first=names[id(a)], second=names[id(b)],
                            between=[names[id(m)] for m in between])
                       for a, between, b in pairs],
                candidates=len(candidates), relu6_replaced=relu6,
                sweeps=sweeps, max_log_scale=largest,
                biases_absorbed=absorbed)


@torch.no_grad()
def _absorb_biases(model: nn.Module, pairs, forward) -> int:
    """Move each channel's smallest pre-activation on the probe (where it
    is > 0) from the first conv's bias into the second's; returns the
    number of pairs changed."""
    minima = {}
    hooks = [first.register_forward_hook(
        lambda m, i, o: minima.__setitem__(
            id(m), o.detach().transpose(0, 1).flatten(1).amin(1)))
        for first, between, second in pairs
        if any(isinstance(b, nn.ReLU) for b in between)]
    try:
        forward()
    finally:
        for h in hooks:
            h.remove()
    changed = 0
    for first, between, second in pairs:
        if id(first) not in minima or first.bias is None or any(
                p != 0 for p in _padding(second)) or not all(
                isinstance(b, (nn.ReLU, nn.Identity, nn.Dropout))
                for b in between):
            continue
        c = minima[id(first)].clamp_min(0).to(first.bias.dtype)
        if not bool((c > 0).any()):
            continue
        first.bias.sub_(c)
        if second.bias is None:
            second.bias = nn.Parameter(second.weight.new_zeros(
                second.out_channels))
        view = _input_view(second)  # [g, out/g, in/g, k...]
        g = second.groups
        cg = c.view(g, 1, -1, *[1] * (second.weight.dim() - 2))
        second.bias.add_((view * cg).flatten(2).sum(2).reshape(-1))
        changed += 1
    return changed


def _padding(conv: nn.Conv2d) -> tuple:
    if has_same_padding(conv):
        return (1, )  # padded by the input's size at each call
    padding = conv.padding
    if isinstance(padding, str):
        return (0, ) if padding == 'valid' else (1, )
    return tuple(padding)
