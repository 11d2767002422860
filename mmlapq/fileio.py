"""Writing files so that a crash never leaves half of one under its name.

Every output of mmlapq (checkpoints, reports, plots, benchmark tables, the
unzipped data) goes through :func:`atomic_write`: the content is written to
``<name>.partial<ext>`` next to the target, then renamed over it, which is
atomic on one file system.
"""
import os
from typing import Callable, TypeVar

T = TypeVar('T')


def atomic_write(path: str, write: Callable[[str], T]) -> T:
    """Call ``write(tmp_path)`` and move ``tmp_path`` to ``path``.

    The temporary name keeps the extension (``x.partial.png``), so writers
    that choose their format by it (matplotlib, mmengine.dump) still do.
    On any failure the temporary file is removed and the error raised.
    """
    root, ext = os.path.splitext(str(path))
    tmp = f'{root}.partial{ext}'
    try:
        out = write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out


def write_text(path: str, text: str) -> None:
    """``text`` into ``path`` (utf-8), atomically."""
    def write(tmp: str) -> None:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
    atomic_write(path, write)
