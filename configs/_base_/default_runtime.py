# The runtime of the Fashion-MNIST models: the values of mmcls's and
# mmpretrain's default_runtime.py, less what differs between the two (the
# scope and the visualizer's type). No default_scope: the tools take the
# library that is installed (mmcls first), and a config that sets
# default_scope = 'mmpretrain' (configs/mmpretrain/) runs on mmpretrain.
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=None, deterministic=False)
