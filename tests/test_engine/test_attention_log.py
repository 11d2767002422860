"""The run's log names the attention classes whose products stay float
because mmlapq does not know their forward (Swin's window attention), and
says nothing of those it quantizes."""
import logging

import torch
from test_export.test_batch_free import small_swin
from test_quant.test_attention import vit

import mmlapq  # noqa: F401
from mmlapq.lapq import CalibrationSet
from mmlapq.registry import MODELS as LAPQ_MODELS


def logged_run(model, size: int) -> str:
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger('test_attention_log')
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    torch.manual_seed(0)
    calib = CalibrationSet.from_tensors(torch.randn(8, 3, size, size),
                                        torch.zeros(8, dtype=torch.long), 4)
    quantizer = LAPQ_MODELS.build(dict(
        type='mmlapq.LAPQQuantizer', init=dict(method='max'),
        search=dict(method='none'), calib=dict(holdout_images=0)))
    quantizer.quantize(model, calib, logger)
    return '\n'.join(records)


def test_float_window_attention_is_named_in_the_log():
    log = logged_run(small_swin(), 56)
    line = next(ln for ln in log.splitlines()
                if ln.startswith('attention products left in floating'))
    assert 'ShiftWindowMSA' in line and 'WindowMSA' in line


def test_quantized_attention_is_not_named():
    assert 'attention products left in floating' not in logged_run(vit(), 32)
