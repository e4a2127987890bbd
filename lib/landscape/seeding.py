"""Seeds: the one place that turns an integer seed into random numbers.

Two kinds of randomness, kept apart: a private ``torch.Generator`` for what the library draws
itself (directions, perturbations, probes, orders) — ``generator(seed)`` — and torch's *global*
generators for what only draws from them (weight initialisation, dropout while training,
third-party code such as PyHessian) — ``seeded(seed, device)``, which restores them on exit so a
caller's random state is never changed behind its back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["generator", "seeded"]


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private generator seeded with ``seed`` (on ``device``; CPU by default).

    Example:
        >>> torch.randn(2, generator=generator(0)).equal(torch.randn(2, generator=generator(0)))
        True
    """
    return torch.Generator(device=device).manual_seed(int(seed))


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global CPU generator (and ``device``'s, if CUDA) inside the block; restore on exit.

    ``seed=None`` leaves the global generators as they are (the block draws from them unseeded).

    Example:
        >>> with seeded(0):
        ...     a = torch.randn(2)
        >>> with seeded(0):
        ...     b = torch.randn(2)
        >>> a.equal(b)
        True
    """
    if seed is None:
        yield
        return
    device = torch.device(device)
    cuda = device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else 0
    with torch.random.fork_rng(devices=[index] if cuda else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(int(seed))
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(int(seed))
        yield
