"""A toy mmcls classifier and a toy dataset, registered for the tests, and
the config of a full LAPQ run on them: an mmengine Runner runs it in-process
in seconds (as mmrazor tests its PTQ loop)."""
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DATASETS, MODELS
from torch.utils.data import Dataset


@MODELS.register_module(force=True)
class ToyBackbone(nn.Module):
    """conv-BN-ReLU, then ``depth - 1`` times conv-ReLU: an mmcls backbone
    (a tuple of maps out)."""

    def __init__(self, channels: int = 8, depth: int = 2):
        super().__init__()
        layers = [nn.Conv2d(3, channels, 3, padding=1),
                  nn.BatchNorm2d(channels), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1),
                       nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return (self.layers(x), )


@DATASETS.register_module(force=True)
class ToyClsDataset(Dataset):
    """Four classes of 8x8 images, each a fixed random template plus noise;
    the items mmcls's pipelines make (``inputs`` uint8 CHW, a data
    sample with its label). ``pipeline`` is accepted and ignored."""

    METAINFO = dict(classes=('a', 'b', 'c', 'd'))

    def __init__(self, num: int = 32, seed: int = 0, pipeline=None,
                 indices=None):
        if indices is not None:  # the first ``indices`` items, as mmengine
            num = min(num, int(indices))
        g = torch.Generator().manual_seed(seed)
        templates = torch.rand(4, 3, 8, 8, generator=g) * 255
        self.labels = torch.randint(0, 4, (num, ), generator=g)
        noise = torch.randn(num, 3, 8, 8, generator=g) * 40
        self.images = (templates[self.labels] + noise).clamp(0, 255).to(
            torch.uint8)
        self.metainfo = dict(self.METAINFO)

    def __len__(self) -> int:
        return len(self.labels)

    def get_gt_labels(self):
        return self.labels.numpy()

    def __getitem__(self, i: int) -> dict:
        from mmcls.structures import ClsDataSample
        return dict(inputs=self.images[i].clone(),
                    data_samples=ClsDataSample().set_gt_label(
                        int(self.labels[i])))


def toy_hooks(calibration: bool = True) -> list:
    hooks = [dict(type='mmlapq.FP32EvalHook'),
             dict(type='mmlapq.CalibrationHook'),
             dict(type='mmlapq.LAPQHook', evaluate_init=True),
             dict(type='mmlapq.LAPQReportHook')]
    return hooks if calibration else [h for h in hooks
                                      if h['type'] != 'mmlapq.CalibrationHook']


def toy_config(work_dir: str, **changes) -> Config:
    """A LAPQ W4A4 run of the toy classifier on the toy data."""
    loader = dict(sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=8, num_workers=0)
    cfg = dict(
        default_scope='mmcls',
        work_dir=work_dir,
        model=dict(
            type='ImageClassifier', backbone=dict(type='ToyBackbone'),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=4, in_channels=8,
                      loss=dict(type='CrossEntropyLoss'), topk=(1, )),
            data_preprocessor=dict(type='ClsDataPreprocessor',
                                   mean=[128.0] * 3, std=[64.0] * 3)),
        test_dataloader=dict(loader, dataset=dict(type='ToyClsDataset',
                                                  num=32, seed=2)),
        test_evaluator=dict(type='Accuracy', topk=(1, )),
        test_cfg=dict(),
        calib_dataloader=dict(dataset=dict(type='ToyClsDataset', num=64,
                                           seed=1)),
        quantizer=dict(type='mmlapq.LAPQQuantizer', w_bits=4, a_bits=4,
                       init=dict(p_grid=[2.0, 3.0, 4.0]),
                       search=dict(maxiter=1, max_evals=6),
                       calib=dict(num_images=16, batch_size=8,
                                  holdout_images=8)),
        custom_hooks=toy_hooks(),
        log_level='WARNING')
    cfg.update(changes)  # a key given as None is left out
    return Config({k: v for k, v in cfg.items() if v is not None})
