"""Small models and data made in the tests (milliseconds on a CPU)."""
import copy
from functools import lru_cache

import torch
import torch.nn as nn


def toy_chain(seed: int = 0) -> nn.Sequential:
    """A five-layer conv net that runs as a chain (nn.Sequential)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))


def toy_data(n: int = 512, seed: int = 0):
    """Four classes, each a fixed random template plus noise (learnable)."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(4, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (n, ), generator=g)
    x = templates[y] + 1.5 * torch.randn(n, 3, 8, 8, generator=g)
    return x, y


def trained_toy_chain(seed: int = 0, steps: int = 60) -> nn.Sequential:
    """A trained toy chain; trained once per test session, copied per use."""
    return copy.deepcopy(_trained_toy_chain(seed, steps))


@lru_cache(maxsize=None)
def _trained_toy_chain(seed: int, steps: int) -> nn.Sequential:
    model = toy_chain(seed)
    x, y = toy_data(seed=seed)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()
