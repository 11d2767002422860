"""The environment of a run or benchmark, for its report: mmengine's
``collect_env`` plus what it does not know (mmcls or mmpretrain, mmlapq,
the device, threads, the date)."""
import datetime
import platform
from typing import Optional

import torch

from .compat import current_library, library_version


def collect_run_env(device: Optional[torch.device] = None) -> dict:
    from mmengine.utils.dl_utils import collect_env

    from ..version import __version__
    env = collect_env()
    device = torch.device(device or 'cpu')
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' \
        else f'cpu ({platform.processor() or platform.machine()}, ' \
        f'{torch.get_num_threads()} threads)'
    details = {k: str(v) for k, v in env.items()
               if k not in ('PyTorch compiling details', 'numpy_random_seed')}
    library = current_library()
    version = library_version(library)
    # The library's own key (env.mmcls / env.mmpretrain) and the pair.
    return dict(torch=env['PyTorch'], library=library,
                library_version=version, **{library: version},
                mmengine=env['MMEngine'], mmlapq=__version__,
                python=env['Python'].split()[0], device=name,
                date=datetime.datetime.now().isoformat(timespec='seconds'),
                details=details)
