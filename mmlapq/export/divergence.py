"""Where two runtimes' integer codes part. Every activation quantizer of
an exported QDQ model is a QuantizeLinear/DequantizeLinear pair; the
DequantizeLinear's output is the quantizer's code times its step. Run the
same images in onnxruntime and in OpenVINO with those outputs exposed, and
the share of codes that differ, layer after layer, shows where float
rounding inside a runtime (a float conv, LayerNorm, softmax) first moves a
value across a rounding boundary and how the later quantizers amplify it.
Needs onnx, onnxruntime and, for OpenVINO, openvino."""
import os.path as osp
import tempfile
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np


def activation_dequantizers(model) -> Dict[str, float]:
    """Output name -> step of each DequantizeLinear of ``model`` (an
    ``onnx.ModelProto``) that reads a computed tensor (an activation
    quantizer; weights are DequantizeLinears of initializers), in graph
    order. Per-channel steps give their smallest."""
    from onnx import numpy_helper
    initializers = {t.name: numpy_helper.to_array(t)
                    for t in model.graph.initializer}
    steps = {}
    for node in model.graph.node:
        if node.op_type != 'DequantizeLinear' or \
                node.input[0] in initializers:
            continue
        scale = initializers.get(node.input[1])
        if scale is None:
            raise ValueError(f'{node.name}: its scale is computed in the '
                             'graph; export with constant scales')
        steps[node.output[0]] = float(np.min(scale))
    return steps


def dequantizer_places(model) -> Dict[str, str]:
    """Output name -> where that activation quantizer sits, as
    ``scope: producer -> consumers`` (the op types around its
    QuantizeLinear/DequantizeLinear pair, e.g. ``layers.0/attn: Softmax ->
    MatMul`` for the softmax output), since exported tensor names say
    little."""
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: Dict[str, List[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for output in model.graph.output:
        consumers.setdefault(output.name, []).append('output')
    places = {}
    for name in activation_dequantizers(model):
        dequantize = producer[name]
        # back through the pair's own QuantizeLinear (and the Clip of a
        # grid narrower than its integer type) to the op it quantizes
        source = producer.get(dequantize.input[0])
        while source is not None and \
                source.op_type in ('QuantizeLinear', 'Clip'):
            source = producer.get(source.input[0])
        scope = dequantize.name.rsplit('/', 1)[0].replace('/model/', '')
        places[name] = (f"{scope.strip('/')}: "
                        f"{source.op_type if source else 'input'} -> "
                        f"{'/'.join(sorted(set(consumers.get(name, []))))}")
    return places


def with_outputs(path: str, names: List[str], out: str) -> str:
    """A copy of the ONNX model ``path`` at ``out`` whose graph outputs also
    include the tensors ``names``."""
    import onnx
    from onnx import helper
    model = onnx.load(path)
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, None))
    onnx.save(model, out)
    return out


OutputsRunner = Callable[[np.ndarray], Dict[str, np.ndarray]]


def onnxruntime_outputs(path: str, threads: Optional[int] = None
                        ) -> OutputsRunner:
    """A function of a batch giving every graph output of ``path`` by name,
    in onnxruntime."""
    from .onnxruntime import ort_session
    session = ort_session(path, threads)
    names = [o.name for o in session.get_outputs()]
    first = session.get_inputs()[0].name
    return lambda x: dict(zip(names, session.run(None, {first: x})))


def openvino_outputs(path: str, threads: Optional[int] = None
                     ) -> OutputsRunner:
    """The same in OpenVINO's CPU plugin."""
    from .openvino import openvino_inference
    infer = openvino_inference(path, threads)
    return lambda x: {name: value for port, value in infer(x).items()
                      for name in port.get_names()}


def code_divergence(steps: Dict[str, float],
                    batches: Iterable[Tuple[Dict[str, np.ndarray],
                                            Dict[str, np.ndarray]]]
                    ) -> List[dict]:
    """For each quantizer output in ``steps`` (name -> step, in order), over
    the (reference, other) output pairs of ``batches``: the share (%) of
    its codes that differ and the largest difference in steps."""
    differing = dict.fromkeys(steps, 0)
    total = dict.fromkeys(steps, 0)
    largest = dict.fromkeys(steps, 0.0)
    for reference, other in batches:
        for name, step in steps.items():
            diff = np.abs(reference[name] - other[name]) / step
            differing[name] += int((diff > 0.5).sum())
            total[name] += diff.size
            largest[name] = max(largest[name], float(np.round(diff.max())))
    return [dict(tensor=name,
                 codes_differing=100.0 * differing[name] / max(total[name], 1),
                 max_steps=largest[name]) for name in steps]


def runtime_divergence(path: str, batches: Iterable[np.ndarray],
                       threads: Optional[int] = None) -> Dict[str, object]:
    """:func:`code_divergence` of OpenVINO against onnxruntime on the image
    ``batches`` for every activation quantizer of the QDQ model ``path``
    (``rows``, each with its place), and the share (%) of images whose
    predicted class (the argmax of the first output) the two runtimes
    agree on, running the file as it is. Exposing the outputs can keep a
    runtime from fusing a pair it would otherwise fuse, so the rows
    describe the runtimes' float rounding, not a fusion that drops a
    rounding."""
    import onnx
    model = onnx.load(path)
    steps = activation_dequantizers(model)
    places = dequantizer_places(model)
    logits = model.graph.output[0].name
    counts = dict(agree=0, images=0)
    # the predictions of the file as deployed, without exposed outputs
    deployed = (onnxruntime_outputs(path, threads),
                openvino_outputs(path, threads))

    def pairs(reference: OutputsRunner, other: OutputsRunner):
        for x in batches:
            counts['agree'] += int((deployed[0](x)[logits].argmax(1) ==
                                    deployed[1](x)[logits].argmax(1)).sum())
            counts['images'] += len(x)
            yield reference(x), other(x)

    with tempfile.TemporaryDirectory() as tmp:
        exposed = with_outputs(path, list(steps),
                               osp.join(tmp, 'exposed.onnx'))
        rows = code_divergence(steps, pairs(
            onnxruntime_outputs(exposed, threads),
            openvino_outputs(exposed, threads)))
    return dict(images=counts['images'],
                predictions_agree=100.0 * counts['agree'] /
                max(counts['images'], 1),
                rows=[dict(row, place=places[row['tensor']])
                      for row in rows])
