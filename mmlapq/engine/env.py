"""The environment of a run or benchmark, for its report: mmengine's
``collect_env`` plus what it does not know (mmcls, mmlapq, the device,
threads, the date)."""
import datetime
import platform
from typing import Optional

import torch


def collect_run_env(device: Optional[torch.device] = None) -> dict:
    import mmcls
    from mmengine.utils.dl_utils import collect_env

    from ..version import __version__
    env = collect_env()
    device = torch.device(device or 'cpu')
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' \
        else f'cpu ({platform.processor() or platform.machine()}, ' \
        f'{torch.get_num_threads()} threads)'
    details = {k: str(v) for k, v in env.items()
               if k not in ('PyTorch compiling details', 'numpy_random_seed')}
    return dict(torch=env['PyTorch'], mmcls=mmcls.__version__,
                mmengine=env['MMEngine'], mmlapq=__version__,
                python=env['Python'].split()[0], device=name,
                date=datetime.datetime.now().isoformat(timespec='seconds'),
                details=details)
