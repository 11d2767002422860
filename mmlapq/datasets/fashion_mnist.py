"""Put Debian's Fashion-MNIST files where mmcls's FashionMNIST reads them."""
import gzip
import shutil
from pathlib import Path
from typing import Union

from ..fileio import atomic_write

DEBIAN_DIR = Path('/usr/share/datasets/fashion-mnist')
FMNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
                't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


def prepare_fashion_mnist(out_dir: Union[str, Path] = 'data/fashion_mnist',
                          source_dir: Union[str, Path] = DEBIAN_DIR) -> Path:
    """Unzip the four idx files into ``out_dir`` (idempotent).

    Raises FileNotFoundError with the apt-get command when the Debian package
    ``dataset-fashion-mnist`` is not installed.
    """
    out_dir, source_dir = Path(out_dir), Path(source_dir)
    missing = [n for n in FMNIST_FILES
               if not (source_dir / f'{n}.gz').is_file()
               and not (out_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f'Fashion-MNIST files {missing} are not in {source_dir}: install '
            'them with `apt-get install dataset-fashion-mnist`')
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FMNIST_FILES:
        target = out_dir / name
        if target.is_file():
            continue
        # An interrupted copy never looks like a complete file to mmcls.
        atomic_write(str(target), lambda tmp, name=name: _gunzip(
            source_dir / f'{name}.gz', tmp))
    return out_dir


def _gunzip(src: Path, dst: str) -> None:
    with gzip.open(src, 'rb') as fin, open(dst, 'wb') as fout:
        shutil.copyfileobj(fin, fout)
