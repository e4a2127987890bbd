"""What a report shows of a notebook's outputs: noise dropped, figures given alt text.

:func:`clean_outputs` filters an executed notebook before nbconvert renders it: progress bars,
warnings and other ``stderr`` streams, the output that shows the ledger and the reading (the
report opens with both), and bare object reprs (``PosixPath(...)``,
``<Figure ...>``, ``<pandas ... Styler at 0x...>``) are dropped; an ``error`` output (the
traceback of a failed run) is never touched, and a cell that raised keeps its ``stderr`` too (less
its progress bars). Each image output gets alt text (:data:`ALT_KEY` in its metadata): the file
name its cell saved it as, and the first sentence of the markdown cell after it. Nothing here
writes a file or renders HTML (that is :mod:`landscape.reports.render`).
"""

from __future__ import annotations

import ast
import copy
import re
from typing import Any

from landscape.reports.results import READING_OUTPUT

__all__ = ["ALT_KEY", "clean_outputs", "is_bare_repr", "strip_progress"]

#: Key of an image output's metadata that holds its alt text (read by report.html.j2).
ALT_KEY = "landscape_alt"

_IMAGES = ("image/png", "image/jpeg", "image/svg+xml")
#: One object repr: ``<... at 0x...>``, ``<Figure size ...>``, ``PosixPath('...')``, ``Text(...)``.
_REPR_ITEM = r"(?:<[A-Za-z_][^<>\n]*>|(?:Posix|Windows|Pure\w*)?Path\([^()\n]*\)|Text\([^\n]*?\))"
_BARE_REPR = re.compile(rf"^\s*[\[(]?\s*{_REPR_ITEM}(?:\s*,\s*{_REPR_ITEM})*\s*,?\s*[\])]?\s*$")
#: A tqdm bar: "desc:  42%|████      | 42/100 [00:01<00:02, 3.2it/s]" (or without the percentage).
_PROGRESS = re.compile(r"\d+%\|.*\||\|\s*\d+/\d+\s*\[|\d+(?:\.\d+)?[a-zA-Z]+/s\]")
_SAVED_PATH = re.compile(r"Path\(['\"](?:[^'\"]*[/\\])?([^/\\'\"]+\.(?:png|jpe?g|svg))['\"]\)")
_MARKUP = re.compile(r"\*+|`+|\$+|\\(?=[A-Za-z])")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_ALT_CHARS = 200


def clean_outputs(nb: Any) -> Any:
    """A copy of the executed notebook ``nb`` (nbformat node) with what a reader needs only.

    Per code cell: ``stderr`` streams are dropped (warnings, progress bars), except in a cell that
    raised, where only their progress-bar lines go; progress-bar lines are dropped from ``stdout``
    too; outputs whose only content is a bare object repr (:func:`is_bare_repr`) are dropped, and
    so is the output marked :data:`~landscape.reports.results.READING_OUTPUT`;
    ``error`` outputs are kept as they are. Image outputs get alt text under :data:`ALT_KEY`.
    """
    nb = copy.deepcopy(nb)
    cells = nb.get("cells", [])
    for position, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs", [])
        failed = any(o.get("output_type") == "error" for o in outputs)
        names = _saved_names(cell, outputs)
        kept = [o for o in (_cleaned(o, failed) for o in outputs) if o is not None]
        caption = _caption(cells[position + 1] if position + 1 < len(cells) else None)
        images = [o for o in kept if any(m in o.get("data", {}) for m in _IMAGES)]
        for number, output in enumerate(images):
            name = names[number] if len(names) == len(images) else ""
            where = f"figure {number + 1} of {len(images)} of this cell" if len(images) > 1 else ""
            parts = [p for p in (name, caption, "" if name else where) if p]
            output.setdefault("metadata", {})[ALT_KEY] = (
                "; ".join(parts) if parts else f"figure of cell [{cell.get('execution_count')}]"
            )
        cell["outputs"] = kept
    return nb


def is_bare_repr(text: str) -> bool:
    """Whether ``text`` is only the repr of objects (a path, a figure, a styler, a legend).

    Example:
        >>> is_bare_repr("PosixPath('/tmp/x.png')"), is_bare_repr("<Figure size 640x480 with 1 Axes>")
        (True, True)
        >>> is_bare_repr("(<matplotlib.legend.Legend at 0x7f>, <matplotlib.legend.Legend at 0x7f>)")
        True
        >>> is_bare_repr("0.93"), is_bare_repr("alpha = 1.98 <2.1>")
        (False, False)
    """
    return bool(_BARE_REPR.match(text))


def strip_progress(text: str) -> str:
    """``text`` without progress-bar lines, as a terminal would show it (``\\r`` overwrites a line).

    Example:
        >>> strip_progress("start\\n\\rdraws:  50%|#####     | 1/2 [00:01<00:01]\\r     \\r\\ndone\\n")
        'start\\ndone\\n'
    """
    lines = []
    for line in text.split("\n"):
        if "\r" in line:
            segments = [s for s in line.split("\r") if s.strip()]
            line = segments[-1] if segments else ""
            if not line.strip():
                continue
        if _PROGRESS.search(line):
            continue
        lines.append(line)
    return "\n".join(lines)


def _cleaned(output: dict[str, Any], failed: bool) -> dict[str, Any] | None:
    """The output as a reader sees it, or None to drop it."""
    kind = output.get("output_type")
    if kind == "stream":
        if output.get("name") == "stderr" and not failed:
            return None
        text = _text(output.get("text", ""))
        shown = strip_progress(text)
        if not shown.strip():
            return None
        output["text"] = shown
        return output
    if kind in ("execute_result", "display_data"):
        if output.get("metadata", {}).get(READING_OUTPUT):
            return None  # the ledger and reading: the report's first screen shows them already
        data = output.get("data", {})
        if set(data) <= {"text/plain"} and is_bare_repr(_text(data.get("text/plain", ""))):
            return None
    return output


def _saved_names(cell: dict[str, Any], outputs: list[dict[str, Any]]) -> list[str]:
    """File names of the figures a cell saved: from ``Path(...)`` outputs, else its source."""
    from_outputs = [
        match.group(1)
        for o in outputs
        if o.get("output_type") in ("execute_result", "display_data")
        for match in _SAVED_PATH.finditer(_text(o.get("data", {}).get("text/plain", "")))
    ]
    return from_outputs or _names_in_source(_text(cell.get("source", "")))


def _names_in_source(source: str) -> list[str]:
    """Literal names given to ``savefig(fig, output_dir, "name")`` calls in the cell, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # magics, or not Python
        return []
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called != "savefig":
            continue
        given = [k.value for k in node.keywords if k.arg == "name"] or node.args[2:3]
        if (
            not given
            or not isinstance(given[0], ast.Constant)
            or not isinstance(given[0].value, str)
        ):
            return []  # a computed name: which file is which figure is unknown
        name = given[0].value
        names.append(name if "." in name else f"{name}.png")
    return names


def _caption(cell: dict[str, Any] | None) -> str:
    """The first sentence of a markdown cell after a figure, without markup (≤ ~200 characters).

    A cell that opens with a heading starts the next section: it is no caption.
    """
    if cell is None or cell.get("cell_type") != "markdown":
        return ""
    text = _LINK.sub(r"\1", _text(cell.get("source", ""))).strip()
    if text.startswith("#"):
        return ""
    text = " ".join(_MARKUP.sub("", text).split())
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return sentence if len(sentence) <= _ALT_CHARS else sentence[: _ALT_CHARS - 1] + "…"


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)
