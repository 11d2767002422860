"""Deployment formats of a quantized model (needs ``onnx``; checking the
result needs ``onnxruntime``). Imported only by the export code."""
from .onnx_qdq import DEFAULT_OPSET, ExportError, export_qdq

__all__ = ['DEFAULT_OPSET', 'ExportError', 'export_qdq']
