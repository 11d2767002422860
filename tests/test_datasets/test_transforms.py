"""GrayToRGB and the Fashion-MNIST files."""
import gzip

import numpy as np
import pytest

from mmlapq.datasets import FMNIST_FILES, GrayToRGB, prepare_fashion_mnist


@pytest.mark.parametrize('shape', [(5, 4), (5, 4, 1)])
def test_gray_becomes_three_equal_channels(shape):
    img = np.arange(20, dtype=np.uint8).reshape(shape)
    out = GrayToRGB()(dict(img=img))['img']
    assert out.shape == (5, 4, 3) and out.flags['C_CONTIGUOUS']
    for c in range(3):
        assert np.array_equal(out[..., c], img.reshape(5, 4))


def test_color_images_pass_unchanged():
    img = np.random.default_rng(0).integers(0, 255, (5, 4, 3), np.uint8)
    assert GrayToRGB()(dict(img=img))['img'] is img


def test_prepare_unzips_once_and_names_the_package_when_missing(tmp_path):
    src = tmp_path / 'debian'
    src.mkdir()
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'):
        prepare_fashion_mnist(tmp_path / 'out', src)
    for name in FMNIST_FILES:
        with gzip.open(src / f'{name}.gz', 'wb') as f:
            f.write(name.encode())
    out = prepare_fashion_mnist(tmp_path / 'out', src)
    assert sorted(p.name for p in out.iterdir()) == sorted(FMNIST_FILES)
    assert (out / FMNIST_FILES[0]).read_bytes() == FMNIST_FILES[0].encode()
