from .fashion_mnist import FMNIST_FILES, prepare_fashion_mnist
from .transforms import GrayToRGB

__all__ = ['GrayToRGB', 'prepare_fashion_mnist', 'FMNIST_FILES']
