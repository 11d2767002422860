"""Swin's window attention exported for any batch size
(export/batch_free.py)."""
import numpy as np
import pytest
import torch
from mmengine.registry import MODELS, init_default_scope

from mmlapq.export import export_qdq
from mmlapq.export.batch_free import (batch_free_reshapes,
                                      window_reverse_any_batch)
from mmlapq.export.onnxruntime import ort_runner


def small_swin() -> torch.nn.Module:
    """mmcls's Swin at 56x56: 14x14 then 7x7 tokens, windows of 7, the
    second block of each stage shifted (the attention mask's path)."""
    init_default_scope('mmcls')
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='SwinTransformer', img_size=56,
                      arch=dict(embed_dims=32, depths=[2, 2],
                                num_heads=[2, 4]),
                      out_indices=(1, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=64))
    ).eval()


def test_the_batch_free_window_reverse_equals_the_library_one():
    from mmcls.models.utils.attention import ShiftWindowMSA
    windows = torch.randn(3 * 4, 7, 7, 8)  # 3 images of 14x14, 4 windows
    assert torch.equal(window_reverse_any_batch(windows, 14, 14, 7),
                       ShiftWindowMSA.window_reverse(windows, 14, 14, 7))


def test_the_swap_is_undone_after_the_block():
    model = small_swin()
    with batch_free_reshapes(model) as swapped:
        assert swapped == 4  # two stages of two blocks
    attn = next(m for m in model.modules()
                if type(m).__name__ == 'ShiftWindowMSA')
    assert 'window_reverse' not in vars(attn)


@pytest.mark.parametrize('batch', [2, 7])
def test_one_exported_swin_gives_each_image_its_batch_1_scores(tmp_path,
                                                              batch):
    """Exported with a batch of 1, run at 2 and 7: without the swap the
    window reverse keeps the example's batch and the file fails (or mixes
    the images up) at any other."""
    model = small_swin()
    path = str(tmp_path / 'swin.onnx')
    info = export_qdq(model, torch.randn(1, 3, 56, 56), path)
    assert info['dynamic_batch']
    x = torch.randn(batch, 3, 56, 56).numpy()
    run = ort_runner(path, threads=1)
    together = run(x)
    alone = np.concatenate([run(x[i:i + 1]) for i in range(batch)])
    with torch.no_grad():
        ref = model(torch.from_numpy(x), mode='tensor').numpy()
    assert np.abs(together - alone).max() <= 1e-4
    assert np.abs(together - ref).max() <= 1e-4
