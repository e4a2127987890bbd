"""Progress bars: one helper, so every slow loop shows the same kind of bar.

``bar`` wraps ``tqdm.auto`` (a widget in Jupyter where ipywidgets is installed, text elsewhere);
bars are transient (``leave=False``) so rendered reports do not keep them, and ``enabled=False``
turns one off without changing the loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["bar"]


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total``; call ``.update(n)``).

    Example:
        >>> sum(bar(range(3), desc="demo", enabled=False))
        3
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, **kwargs)
