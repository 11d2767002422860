"""The calibration set: seeded images, shared between processes batch by
batch through RankShareSampler and mmengine's build_dataloader."""
import torch
from mmengine.registry import MODELS, init_default_scope
from toy_runner import toy_config

import mmlapq  # noqa: F401
from mmlapq.engine.calibration import RankShareSampler, build_calibration_set


def toy_model(tmp_path):
    init_default_scope('mmcls')
    return MODELS.build(toy_config(str(tmp_path)).model).eval()


def test_sampler_interleaves_batches_between_processes():
    indices = list(range(10, 30))
    shares = [list(RankShareSampler(None, indices, 4, rank=r,
                                    world_size=2)) for r in range(2)]
    assert shares[0] == [10, 11, 12, 13, 18, 19, 20, 21, 26, 27, 28, 29]
    assert shares[1] == [14, 15, 16, 17, 22, 23, 24, 25]


def test_processes_together_hold_the_images_of_one(tmp_path):
    cfg, model = toy_config(str(tmp_path)), toy_model(tmp_path)
    one, record = build_calibration_set(cfg, model, 12, 0, 4,
                                        holdout_images=6)
    assert one.num_images == 12 and one.holdout.num_images == 6
    assert record['holdout_images'] == 6
    parts = [build_calibration_set(cfg, model, 12, 0, 4, rank=r,
                                   world_size=2)[0] for r in range(2)]
    # batches 0 and 2 on rank 0, batch 1 on rank 1
    assert torch.equal(parts[0].inputs[0], one.inputs[0])
    assert torch.equal(parts[1].inputs[0], one.inputs[1])
    assert torch.equal(parts[0].inputs[1], one.inputs[2])
    again, _ = build_calibration_set(cfg, model, 12, 0, 4, holdout_images=6)
    assert all(torch.equal(a, b) for a, b in zip(again.inputs, one.inputs))
    other, _ = build_calibration_set(cfg, model, 12, 1, 4)
    assert not torch.equal(other.inputs[0], one.inputs[0])  # the seed
