"""Shared tiny problems in float64 for brute-force checks."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape.problem import Problem


@pytest.fixture(autouse=True)
def seeded_generators():
    """Every test starts from the same global torch and numpy seeds, so a test that draws with
    ``torch.randn`` without its own generator gives the same numbers on every run and in any order."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def fixed_library_fingerprint():
    """The plan runner's library fingerprint, pinned for a test module: edits to lib/landscape
    elsewhere (another session at work) must not make its runs out of date mid-test. Request it with
    ``pytestmark = pytest.mark.usefixtures("fixed_library_fingerprint")`` so that it is set up
    before the module's plan fixtures."""
    from landscape.reports import records

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "library_fingerprint", lambda: "library under test")
        yield


def tiny_net(seed: int = 0, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 5)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.Tanh(), nn.Linear(5, 3)]
    net = nn.Sequential(*layers).double()
    if batch_norm:  # give the running statistics non-trivial values
        with torch.no_grad():
            net.train()
            net(torch.randn(64, 4, dtype=torch.float64))
    return net.eval()


def tiny_data(K: int = 12, seed: int = 1, classes: int = 3):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(K, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (K,), generator=generator)
    return X, y


@pytest.fixture
def tiny_problem() -> Problem:
    X, y = tiny_data()
    return Problem(tiny_net(), X, y, dtype=torch.float64, device="cpu")


@pytest.fixture
def bn_problem() -> Problem:
    X, y = tiny_data()
    return Problem(tiny_net(batch_norm=True), X, y, dtype=torch.float64, device="cpu")


@pytest.fixture
def linear_regression() -> Problem:
    """A purely quadratic loss: a linear model with squared error."""
    torch.manual_seed(3)
    net = nn.Linear(3, 2).double()
    generator = torch.Generator().manual_seed(4)
    X = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    return Problem(net, X, y, loss="mse", dtype=torch.float64, device="cpu")
