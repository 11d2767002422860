"""The environment of a run or benchmark, for its report: mmengine's
``collect_env`` plus what it does not know (mmcls or mmpretrain, mmlapq,
the device, threads, the date)."""
import datetime
import platform
from typing import Optional

import torch

from .compat import current_library, library_version


def cpu_model() -> str:
    """The CPU's model name and the integer-dot-product extensions that
    steer its int8 kernels and its float rounding (Linux; '' elsewhere):
    the machine type a stored figure was measured on."""
    try:
        with open('/proc/cpuinfo') as f:
            info = f.read()
    except OSError:
        return ''
    name = next((line.split(':', 1)[1].strip() for line in info.splitlines()
                 if line.startswith('model name')), '')
    flags = set(next((line.split(':', 1)[1].split()
                      for line in info.splitlines()
                      if line.startswith('flags')), []))
    extensions = [label for flag, label in (('avx512_vnni', 'AVX-512 VNNI'),
                                            ('amx_tile', 'AMX'))
                  if flag in flags]
    if not extensions and 'avx2' in flags:
        extensions = ['AVX2 only']
    return f"{name} ({', '.join(extensions)})" if extensions else name


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
                cpu=cpu_model(),
                date=datetime.datetime.now().isoformat(timespec='seconds'),
                details=details)
