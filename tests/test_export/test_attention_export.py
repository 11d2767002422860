"""A quantized vision transformer exports with both attention products on
integer kernels: in onnxruntime's optimized graph every Linear and both
products of every attention are integer kernels (MatMulIntegerToFloat,
QLinearMatMul, QGemm) and no float MatMul is left, and the model computes
what PyTorch computes. With the products left float (the default before
mmlapq quantized them), float MatMuls remain: the check fails."""
import numpy as np
import pytest
import torch
from test_quant.test_attention import vit, with_clips

from mmlapq.export import export_qdq
from mmlapq.export.onnxruntime import optimized_ops, ort_runner
from mmlapq.quant import QuantSettings, quantize_model

INTEGER_MATMULS = ('MatMulIntegerToFloat', 'QLinearMatMul', 'QGemm',
                   'MatMulInteger')
FLOAT_MATMULS = ('MatMul', 'FusedMatMul', 'Gemm', 'FusedGemm')


def float_matmuls(counts):
    return sum(counts.get(op, 0) for op in FLOAT_MATMULS)


def exported(tmp_path, bits, **settings):
    model = vit()
    quantize_model(model, QuantSettings(w_bits=bits, a_bits=bits,
                                        **settings))
    x = with_clips(model)
    path = str(tmp_path / 'vit.onnx')
    export_qdq(model, x[:1], path)
    return model, x, path, optimized_ops(path, str(tmp_path))['counts']


@pytest.mark.parametrize('bits', [8, 4])
def test_every_linear_and_attention_product_is_an_integer_kernel(tmp_path,
                                                                 bits):
    model, x, path, counts = exported(tmp_path, bits, softmax_bits=8)
    # 2 layers: qkv, proj, fc1, fc2 and the two products each; the head
    linears, products = 2 * 4 + 1, 2 * 2
    assert sum(counts.get(op, 0) for op in INTEGER_MATMULS) == \
        linears + products
    assert float_matmuls(counts) == 0
    with torch.no_grad():
        ref = model(x, mode='tensor').numpy()
    out = ort_runner(path, threads=1)(x.numpy())
    assert np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_float_products_are_float_matmuls(tmp_path):
    _, _, _, counts = exported(tmp_path, 8, attention_matmuls=False)
    assert float_matmuls(counts) == 2 * 2
