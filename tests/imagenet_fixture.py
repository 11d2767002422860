"""A tiny ImageNet-layout folder and a random VGG-11 in the mmcls checkpoint
format: the same code paths a user with ImageNet and an official
checkpoint runs, without either."""
import os
import os.path as osp

import numpy as np
import torch


def make_imagenet_folder(root: str, num_train: int = 12, num_val: int = 6,
                         num_classes: int = 4, seed: int = 0) -> str:
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, count in (('train', num_train), ('val', num_val)):
        lines = []
        for i in range(count):
            label = i % num_classes
            rel = (f'n{label:08d}/{split}_{i}.JPEG' if split == 'train'
                   else f'ILSVRC2012_val_{i:08d}.JPEG')
            path = osp.join(root, split, rel)
            os.makedirs(osp.dirname(path), exist_ok=True)
            h, w = rng.integers(240, 300, size=2)
            base = rng.integers(0, 255, size=3)
            img = (base + rng.normal(0, 40, size=(h, w, 3))).clip(0, 255)
            Image.fromarray(img.astype(np.uint8)).save(path, quality=90)
            lines.append(f'{rel} {label}')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root


def save_random_vgg11(path: str, seed: int = 0) -> str:
    """A randomly initialised mmcls ImageNet VGG-11, saved as mmcls saves."""
    from mmcls.models import build_classifier
    from mmcls.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(seed)
    model = build_classifier(dict(
        type='ImageClassifier',
        backbone=dict(type='VGG', depth=11, num_classes=1000),
        neck=None,
        head=dict(type='ClsHead', topk=(1, 5))))
    model.init_weights()
    torch.save(dict(meta=dict(mmcls_version='1.0.0rc6'),
                    state_dict=model.state_dict()), path)
    return path


def save_random_model(config: str, path: str, seed: int = 0) -> str:
    """A randomly initialised model of an mmcls ``config``, saved as mmcls
    saves (ResNet, MobileNetV2, ...)."""
    from mmcls.models import build_classifier
    from mmcls.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    torch.manual_seed(seed)
    model = build_classifier(Config.fromfile(config).model)
    model.init_weights()
    torch.save(dict(meta=dict(mmcls_version='1.0.0rc6'),
                    state_dict=model.state_dict()), path)
    return path


def imagenet_cfg_options(root: str) -> list:
    """--cfg-options that point a stock mmcls VGG config at ``root``."""
    opts = []
    for loader in ('train_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={root}',
                 f'{loader}.num_workers=0', f'{loader}.batch_size=4']
    return opts


def label_val_by_model(root: str, checkpoint: str, config: str) -> list:
    """Rewrite meta/val.txt with the float model's own top-1 predictions
    (through the config's test pipeline), so FP32 top-1 is 100% by
    construction and a quantized model's top-1 is a meaningful number."""
    from mmcls.models import build_classifier
    from mmcls.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.dataset import Compose, pseudo_collate
    register_all_modules()
    cfg = Config.fromfile(config)
    # As mmengine's Runner does: the config's top-level data_preprocessor
    # (mean/std, BGR->RGB) belongs to the model.
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = build_classifier(cfg.model).eval()
    model.load_state_dict(torch.load(checkpoint)['state_dict'])
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    ann = osp.join(root, 'meta', 'val.txt')
    rels = [line.split()[0] for line in open(ann).read().split('\n') if line]
    batch = pseudo_collate([
        pipeline(dict(img_path=osp.join(root, 'val', r))) for r in rels])
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        preds = model(data['inputs'], mode='tensor').argmax(1).tolist()
    with open(ann, 'w') as f:
        f.write(''.join(f'{r} {p}\n' for r, p in zip(rels, preds)))
    return preds
