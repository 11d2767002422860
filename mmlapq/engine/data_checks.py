"""Bad data, found before it costs a run: one-line errors that name the file
or folder and the fix, instead of tracebacks from deep inside a loader.

- :func:`check_datasets` builds the test and calibration datasets up front:
  an annotation file that lists no image, a missing folder, or a label the
  model cannot predict stops the run before anything is evaluated.
- :func:`reading_data` turns the errors of reading one image (truncated or
  not an image, a folder, unreadable) into an LAPQError naming the file.
"""
import re
from contextlib import contextmanager
from typing import Optional

import numpy as np

from .datasets import describe, build_dataset, calibration_dataset_cfg
from .errors import LAPQError

_FAILED_TO_LOAD = re.compile(r'failed to load image: (.+)')
# An OSError re-raised from a DataLoader worker keeps only its message.
_OS_ERROR = re.compile(r"\[Errno \d+\] ([^:\n]+): '([^'\n]+)'")


def image_error(exc: BaseException) -> Optional[LAPQError]:
    """The one-line error for a failure to read an image, or None when
    ``exc`` is something else."""
    match = _FAILED_TO_LOAD.search(str(exc))
    if isinstance(exc, AssertionError) and match:
        return LAPQError(f'cannot decode image {match.group(1).strip()}: it '
                         'is truncated or not an image; replace it, or '
                         'remove its line from the annotation file')
    if not isinstance(exc, OSError):
        return None
    filename, reason = getattr(exc, 'filename', None), exc.strerror
    if not filename:
        found = _OS_ERROR.search(str(exc))
        if not found:
            return None
        reason, filename = found.groups()
    return LAPQError(f'cannot read {filename} ({reason or type(exc).__name__}'
                     '): check the file, or remove its line from the '
                     'annotation file')


@contextmanager
def reading_data():
    """Inside the block, an image that cannot be read is an LAPQError."""
    try:
        yield
    except (AssertionError, OSError) as exc:
        error = image_error(exc)
        if error is None:
            raise
        raise error from None


def check_labels(dataset, num_classes: Optional[int], what: str,
                 dataset_cfg: dict) -> None:
    """Every label must be a class the model can predict."""
    if num_classes is None or not hasattr(dataset, 'get_gt_labels'):
        return
    labels = np.asarray(dataset.get_gt_labels()).reshape(-1)
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise LAPQError(f'the {what} dataset ({describe(dataset_cfg)}) has '
                        f'label {int(bad[0])}, outside the model\'s '
                        f'{num_classes} classes 0..{num_classes - 1}: fix '
                        'the annotation file or the model\'s num_classes')


def model_num_classes(cfg) -> Optional[int]:
    """Classes the config's model predicts: its head's num_classes, else
    the backbone's (mmcls's ImageNet VGG classifies in the backbone), else
    the data preprocessor's; None when the config does not say."""
    model = cfg.get('model') or {}
    for part in (model.get('head'), model.get('backbone'),
                 model.get('data_preprocessor'), cfg.get('data_preprocessor')):
        num = (part or {}).get('num_classes')
        if isinstance(num, int) and not isinstance(num, bool) and num > 0:
            return num
    return None


def check_datasets(cfg, quantize: bool = True):
    """Build the test dataset (and the calibration one when quantizing) as
    the run will, and check them: images listed, labels in range. Returns
    the calibration dataset (None when not quantizing), for the run to use
    instead of building it again."""
    num_classes = model_num_classes(cfg)
    test_cfg = cfg.test_dataloader['dataset']
    check_labels(build_dataset(test_cfg, 'test'), num_classes, 'test',
                 test_cfg)
    if not quantize:
        return None
    calib_cfg, _, _ = calibration_dataset_cfg(cfg)
    dataset = build_dataset(calib_cfg, 'calibration')
    check_labels(dataset, num_classes, 'calibration', calib_cfg)
    return dataset
