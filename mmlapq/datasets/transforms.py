"""Data pipeline transforms that mmcls lacks."""
import numpy as np
from mmcv.transforms import BaseTransform

from mmlapq.registry import TRANSFORMS


@TRANSFORMS.register_module()
class GrayToRGB(BaseTransform):
    """Repeat a one-channel image (H, W) or (H, W, 1) into three channels.

    mmcls's VGG has a fixed three-channel stem, so gray data such as
    Fashion-MNIST passes through this before ``PackClsInputs``.
    """

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 3 and img.shape[2] == 3:
            return results
        if img.ndim == 3:
            img = img[..., 0]
        results['img'] = np.ascontiguousarray(np.stack([img] * 3, axis=-1))
        return results
