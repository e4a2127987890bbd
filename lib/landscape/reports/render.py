"""HTML: each run's report.html and thumbnail, the plan's index.html and claims.html, from templates.

Here live :func:`render_report` (an executed notebook as one page that opens with the run's
headline and claims ledger from results.json, code folded, with a banner from run.json),
:func:`write_thumbnail` (the headline figure), :func:`write_index` and :class:`LiveIndex` (the
index rewritten as runs finish; each write also writes ``claims.html``, every claim of every run,
and the MathJax copy of :func:`write_static`), and the formatting of results.json
(:func:`summarize_results`, :func:`format_number`, :func:`flatten_results`). The HTML itself is in
the jinja2 templates of ``templates/`` (``report.html.j2`` extends nbconvert's ``lab`` template;
``index.html.j2``, ``claims.html.j2``); nothing here builds HTML from strings or escapes by hand.
What a report shows of the notebook's outputs is :mod:`landscape.reports.outputs`. Nothing here
executes a notebook or decides whether a run is up to date (that is
:mod:`landscape.reports.runner` and :mod:`landscape.reports.records`).
"""

from __future__ import annotations

import base64
import importlib.resources
import io
import json
import logging
import math
import os
import posixpath
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

import landscape
from landscape.files import cannot_write, write_atomic
from landscape.reports import records  # records.library_fingerprint is looked up when called
from landscape.reports.outputs import clean_outputs
from landscape.reports.plans import RESERVED_PARAMETER, Plan, Run, RunResult, notebook_defaults
from landscape.reports.records import (
    FAILED_DIR,
    UNFINISHED,
    fingerprint,
    format_when,
    is_report,
    now,
    read_run_record,
    run_state,
)
from landscape.reports.results import read_results, to_json

__all__ = [
    "CLAIMS_PAGE",
    "STATIC_DIR",
    "TEMPLATES",
    "THUMB_WIDTH",
    "LiveIndex",
    "flatten_results",
    "format_number",
    "render_report",
    "summarize_results",
    "write_index",
    "write_static",
    "write_thumbnail",
]

#: The folder of the jinja2 templates (installed as package data).
TEMPLATES = Path(__file__).resolve().with_name("templates")
#: The plan-level page listing every claim of every run, beside index.html.
CLAIMS_PAGE = "claims.html"
#: Folder beside index.html holding what the reports load (MathJax), written once per plan.
STATIC_DIR = "_static"
#: Width in pixels of a run's thumb.png (its headline figure) in the index.
THUMB_WIDTH = 480
#: MathJax 3's single-file TeX-to-SVG bundle (all TeX extensions, no web fonts to fetch).
MATHJAX_BUNDLE = "tex-svg-full.js"
#: Where the bundle lies inside ``_static/``.
MATHJAX = f"mathjax/{MATHJAX_BUNDLE}"

#: Longest parameter value the index shows in full.
_PARAMETER_CHARS = 40
#: results.json keys the index shows as the run's answer, not among "all numbers".
_SUMMARY_KEYS = ("claims", "headline", "headline_figure", "reading")
#: Order of the verdicts in a ledger (what a reader must not miss first), and their colours.
_VERDICT_RANK = {"fails": 0, "inconclusive": 1, "holds": 2}
_VERDICT_COLOURS = {"fails": "#c62828", "inconclusive": "#8a6d00", "holds": "#2e7d32"}
_UNKNOWN_COLOUR = "#57606a"
#: Label and colour of each state a run can show in the index.
_BADGES = {
    "succeeded": ("succeeded", "#2e7d32"),
    "cached": ("up to date (earlier run)", "#558b2f"),
    "failed": ("failed", "#c62828"),
    "interrupted": ("interrupted", "#6a1b9a"),
    "out of date": ("out of date", "#ef6c00"),
    "incomplete": ("incomplete", "#ef6c00"),
    "pending": ("pending", "#1565c0"),
    "missing": ("not run", "#757575"),
}


def render_report(
    notebook: str | os.PathLike[str],
    html_path: str | os.PathLike[str],
    run_record: Mapping[str, Any] | None = None,
    index_href: str = "../index.html",
) -> Path:
    """Render an executed notebook to one HTML page: the run's answer first, then the notebook.

    The page opens with what the notebook recorded in the results.json beside it (see
    :func:`~landscape.reports.read_results`): its ``headline`` sentence, the verdict counts and the
    claims ledger (fails first); a run without them shows the notebook only. The notebook's
    outputs are cleaned first (:func:`~landscape.reports.outputs.clean_outputs`: no progress bars,
    warnings or bare reprs; tracebacks kept; alt text on figures). Code cells are folded into
    ``<details>`` ("code", "parameters", "injected parameters"), except the cell that raised,
    which is open. With ``run_record`` (the content of run.json) a banner names the plan, run,
    status, duration, parameters and error, with a link to the index (``index_href``, relative to
    the page). Formulas are typeset by the MathJax copy in ``_static/`` beside the index (see
    :func:`write_static`); no script comes from the network.

    Returns:
        The path written (atomically).
    """
    import nbformat
    from nbconvert import HTMLExporter

    quiet = logging.getLogger("landscape.reports.nbconvert")
    quiet.setLevel(logging.ERROR)
    exporter = HTMLExporter(
        log=quiet,
        template_name="lab",
        # under a prefix, so that no name of ours can shadow one of nbconvert's templates
        extra_loaders=[jinja2.PrefixLoader({"landscape": jinja2.FileSystemLoader(TEMPLATES)})],
        template_file="landscape/report.html.j2",
    )
    nb = clean_outputs(nbformat.read(str(notebook), as_version=4))
    run = {**run_record, "index_href": index_href} if run_record else None
    static = posixpath.join(posixpath.dirname(index_href), STATIC_DIR)
    resources = {
        "landscape_run": run,
        "landscape_summary": summarize_results(_results(Path(notebook).parent)),
        "landscape_mathjax": f"{static}/{MATHJAX}" if _mathjax_source() else None,
    }
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return write_atomic(html_path, body)


def summarize_results(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a report and the index show of a run's results.json, or None when it records none.

    Returns:
        ``{"headline": str, "counts": [{"verdict", "count", "colour"}], "claims": [row, ...],
        "reading": str}`` (the reading is markdown, rendered on the report's first screen),
        the claims sorted fails first, each row with ``verdict``, ``colour``, ``statement``,
        ``note``, ``estimate`` ("2.01 [1.95, 2.08] at 95 %"), ``region``, ``replicates``,
        ``source`` and ``id``.
    """
    raw = results.get("claims")
    claims = [_claim_row(c) for c in raw if isinstance(c, Mapping)] if isinstance(raw, list) else []
    claims.sort(key=lambda row: _VERDICT_RANK.get(row["verdict"], len(_VERDICT_RANK)))
    headline, reading = (results.get(key) for key in ("headline", "reading"))
    headline = headline.strip() if isinstance(headline, str) else ""
    reading = reading.strip() if isinstance(reading, str) else ""
    if not claims and not headline and not reading:
        return None
    counts = [
        {"verdict": v, "count": n, "colour": _VERDICT_COLOURS.get(v, _UNKNOWN_COLOUR)}
        for v, n in Counter(row["verdict"] for row in claims).items()
    ]
    counts.sort(key=lambda c: _VERDICT_RANK.get(c["verdict"], len(_VERDICT_RANK)))
    return {"headline": headline, "counts": counts, "claims": claims, "reading": reading}


def _claim_row(claim: Mapping[str, Any]) -> dict[str, Any]:
    """One claim of results.json (SPEC §11) as the strings a ledger shows."""
    verdict = str(claim.get("verdict", "inconclusive"))
    interval = claim.get("interval")
    estimate = _short(claim.get("estimate"))
    if isinstance(interval, list | tuple) and len(interval) == 2:
        estimate += f" [{_short(interval[0])}, {_short(interval[1])}]"
    level = claim.get("level")
    if isinstance(level, int | float) and not isinstance(level, bool) and interval:
        estimate += f" at {level * 100:g} %"
    region = claim.get("region")
    return {
        "id": str(claim.get("id", "")),
        "verdict": verdict,
        "colour": _VERDICT_COLOURS.get(verdict, _UNKNOWN_COLOUR),
        "statement": str(claim.get("statement", "")),
        "note": str(claim.get("note") or ""),
        "estimate": estimate,
        "region": ", ".join(f"{k} {format_number(v)}" for k, v in region.items())
        if isinstance(region, Mapping)
        else "",
        "replicates": str(claim.get("replicates", "")),
        "source": str(claim.get("source", "")),
    }


def _short(value: Any) -> str:
    """A number as a ledger shows it: 3 significant digits, "n/a" for NaN."""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return format_number(value) if value is not None else "–"


def _results(folder: Path) -> dict[str, Any]:
    """The results.json of ``folder`` as numbers; {} if missing or not a JSON object."""
    try:
        return read_results(folder)
    except ValueError:
        return {}


def write_thumbnail(notebook: Path, thumb: Path, width: int = THUMB_WIDTH) -> bool:
    """Write the run's headline figure, shrunk to at most ``width`` pixels wide; False if none.

    The headline figure is the file results.json names under ``headline_figure`` (a figure the
    notebook saved beside it); without one, or if that file is missing, the notebook's first PNG
    output.
    """
    png = _headline_figure(notebook.parent) or _first_png(notebook)
    if png is None:
        thumb.unlink(missing_ok=True)
        return False
    write_atomic(thumb, _shrink_png(png, width))
    return True


def _headline_figure(folder: Path) -> bytes | None:
    """The bytes of the figure results.json names as ``headline_figure``, if it is there."""
    path = _headline_path(folder, _results(folder))
    try:
        return path.read_bytes() if path is not None else None
    except OSError:
        return None


def _headline_path(folder: Path, results: Mapping[str, Any]) -> Path | None:
    """``<folder>/<name>`` for the ``headline_figure`` in ``results`` (a path counts by its name)."""
    name = results.get("headline_figure")
    if not isinstance(name, str) or not Path(name).name:
        return None
    path = folder / Path(name).name
    return path if path.is_file() else None


def _first_png(notebook: Path) -> bytes | None:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("image/png")
            if data:
                return base64.b64decode("".join(data) if isinstance(data, list) else data)
    return None


def _shrink_png(png: bytes, width: int) -> bytes:
    """``png`` scaled down to ``width`` pixels wide (aspect kept), as PNG; unchanged if narrower."""
    try:
        from PIL import Image
    except ImportError:
        return png
    with Image.open(io.BytesIO(png)) as image:
        if image.width > width:
            height = max(1, round(image.height * width / image.width))
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _mathjax_source() -> Path | None:
    """MathJax's single-file TeX-to-SVG bundle in the installed package, or None if absent."""
    try:
        root = importlib.resources.files("mathjax")
    except ModuleNotFoundError:
        return None
    source = Path(str(root)) / "static" / "mathjax" / "es5" / MATHJAX_BUNDLE
    return source if source.is_file() else None


def write_static(plan_dir: Path) -> Path | None:
    """Copy MathJax (and its licence) to ``<plan_dir>/_static/`` unless it is there already.

    The reports of the plan load it from there, so formulas render offline. Returns the folder,
    or None when MathJax is not installed (formulas then show as LaTeX).

    Raises:
        OSError: when the folder cannot be written.
    """
    source = _mathjax_source()
    if source is None:
        return None
    static = plan_dir / STATIC_DIR
    copies = {MATHJAX: source, "mathjax/LICENSE": source.parent.parent / "LICENSE"}
    for name, origin in copies.items():
        target = static / name
        if origin.is_file() and (
            not target.is_file() or target.stat().st_size != origin.stat().st_size
        ):
            write_atomic(target, origin.read_bytes())
    return static


def format_number(value: Any) -> str:
    """Format a results.json value for the index: 3 significant digits, short lists and strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, str):
        return value if len(value) <= 40 else value[:37] + "…"
    if isinstance(value, list):
        shown = [format_number(v) for v in value[:3]]
        if len(value) > 4:
            return f"[{', '.join(shown)}, …, {format_number(value[-1])}] ({len(value)} values)"
        return f"[{', '.join(format_number(v) for v in value)}]"
    if isinstance(value, dict):
        return "{…}" if value else "{}"
    return str(value)


def flatten_results(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(key, formatted value)`` pairs; dicts are flattened one level (``outer.inner``)."""
    pairs: list[tuple[str, str]] = []
    for key, value in results.items():
        if isinstance(value, dict) and value:
            pairs.extend((f"{key}.{inner}", format_number(v)) for inner, v in value.items())
        else:
            pairs.append((str(key), format_number(value)))
    return pairs


class LiveIndex:
    """The plan's index.html, rewritten (atomically, under a lock) as runs finish.

    A folder that cannot be written (full disk, read-only) is said once through ``warn``; it fails
    no run.
    """

    def __init__(
        self,
        plan: Plan,
        plan_dir: Path,
        library: str,
        selected: Iterable[str],
        warn: Callable[[str], Any] = print,
    ) -> None:
        self.plan = plan
        self.plan_dir = plan_dir
        self.library = library
        self.selected = list(selected)
        self.results: dict[str, RunResult] = {}
        self.lock = threading.Lock()
        self.warn = warn
        self.problem: str | None = None

    def update(self, result: RunResult) -> None:
        """Record a run's result and rewrite the index."""
        with self.lock:
            self.results[result.name] = result
            self._write()

    def write(self) -> Path | None:
        """Rewrite the index; None if it could not be written."""
        with self.lock:
            return self._write()

    def settle(self) -> None:
        """No run is pending any more (after Ctrl-C, runs not started show their state on disk)."""
        with self.lock:
            self.selected = [name for name in self.selected if name in self.results]

    def _write(self) -> Path | None:
        pending = [name for name in self.selected if name not in self.results]
        try:
            return write_index(self.plan, self.plan_dir, self.results, self.library, pending)
        except OSError as exc:
            problem = cannot_write(exc, self.plan_dir / "index.html")
            if problem != self.problem:
                self.warn(f"warning: {problem}; the index was not updated.")
            self.problem = problem
            return None


def write_index(
    plan: Plan,
    plan_dir: Path,
    results: Mapping[str, RunResult] | None = None,
    library: str | None = None,
    pending: Iterable[str] = (),
) -> Path:
    """Write ``<plan_dir>/index.html`` (one row per run) and ``claims.html``, from the run folders.

    Each row shows the run's status, its verdict counts and headline, its description and
    parameters, its duration and its headline figure (thumb.png), with every number of
    results.json folded away. ``claims.html`` lists every claim of every run. Both show, for each
    run, its last good report (or its failed attempt when there is none). The MathJax copy the
    reports load is written too (:func:`write_static`).

    Args:
        plan: the plan.
        plan_dir: its report folder (see :func:`~landscape.reports.plan_output_dir`).
        results: this call's results by run name; a run succeeded earlier and not re-executed now
            is shown as "up to date (earlier run)".
        library: :func:`~landscape.reports.library_fingerprint`, if computed already.
        pending: runs this call will execute but has not finished (shown as "pending").

    Returns:
        The index path.
    """
    results = results or {}
    library = library or records.library_fingerprint()
    pending = set(pending)
    rows = [
        _index_row(run, plan_dir / run.name, results.get(run.name), library, run.name in pending)
        for run in plan.runs
    ]
    states = [row["state"] for row in rows]
    counts = ", ".join(f"{states.count(s)} {_BADGES[s][0]}" for s in _BADGES if states.count(s))
    claims = [
        {**claim, "run": row["name"], "href": row["href"] if row["report"] else ""}
        for row in rows
        for claim in (row["summary"] or {}).get("claims", [])
    ]
    verdicts = summarize_results({"claims": [{"verdict": c["verdict"]} for c in claims]})
    common = {
        "plan": plan,
        "written": format_when({"timestamp": now()}),
        "version": landscape.__version__,
        "verdicts": verdicts["counts"] if verdicts else [],
        "claims_page": CLAIMS_PAGE,
    }
    index = _templates().get_template("index.html.j2").render(common, counts=counts, rows=rows)
    path = write_atomic(plan_dir / "index.html", index)
    claims.sort(key=lambda c: _VERDICT_RANK.get(c["verdict"], len(_VERDICT_RANK)))
    page = _templates().get_template("claims.html.j2").render(common, claims=claims)
    write_atomic(plan_dir / CLAIMS_PAGE, page)
    write_static(plan_dir)
    return path


@cache
def _templates() -> jinja2.Environment:
    """The jinja2 environment of the index and the claims page (autoescaped HTML)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def _index_row(
    run: Run, run_dir: Path, result: RunResult | None, library: str, pending: bool
) -> dict[str, Any]:
    """What the index shows for a run (the template's ``row``), with its ``state``.

    The row shows the last good report (headline, verdicts, numbers, figure, links); a failed or
    interrupted latest attempt adds its badge, its error and links to ``<run>/failed/``. With no
    good report, the row shows the attempt.
    """
    state = _index_state(run, run_dir, result, library, pending)
    attempt_dir = run_dir / FAILED_DIR
    attempt = read_run_record(attempt_dir)
    has_attempt = attempt is not None and attempt.get("status") in UNFINISHED
    has_good = is_report(run_dir)
    shown_dir = attempt_dir if has_attempt and not has_good else run_dir
    shown = read_run_record(shown_dir) or {}
    error = result.error if result is not None and result.status in UNFINISHED else None
    if state in UNFINISHED and not error:
        error = (attempt if has_attempt else shown).get("error")
    href = shown_dir.relative_to(run_dir.parent).as_posix()
    used = shown.get("parameters", to_json(run.parameters))  # what produced the results shown
    label, colour = _BADGES[state]
    duration = shown.get("duration")
    numbers = _results(shown_dir)
    return {
        "state": state,
        "name": run.name,
        "href": href,
        "report": (shown_dir / "report.html").is_file(),
        "thumb": (shown_dir / "thumb.png").is_file(),
        "notebook": run.notebook.name,
        "description": run.description,
        "parameters": _effective(shown_dir / "notebook.ipynb", used),
        "plan_now": _listed(to_json(run.parameters)) if used != to_json(run.parameters) else [],
        "files": _file_links(href, shown_dir, ("notebook.ipynb",)),
        "attempt": str(attempt["status"]) if has_attempt and has_good else "",  # type: ignore[index]
        "attempt_files": (
            _file_links(f"{run.name}/{FAILED_DIR}", attempt_dir, ("notebook.ipynb", "report.html"))
            if has_attempt and has_good
            else []
        ),
        "label": label,
        "colour": colour,
        "when": format_when(shown),
        "last_good": has_good and state in UNFINISHED,
        "duration": f"{duration:.1f} s" if isinstance(duration, int | float) else "",
        "summary": summarize_results(numbers),
        "thumb_alt": _thumb_alt(run.name, shown_dir, numbers),
        "numbers": flatten_results({k: v for k, v in numbers.items() if k not in _SUMMARY_KEYS}),
        "error": str(error) if error else "",
    }


def _thumb_alt(name: str, folder: Path, results: Mapping[str, Any]) -> str:
    """The alt text of a run's thumbnail (see :func:`write_thumbnail` for which figure it is)."""
    figure = _headline_path(folder, results)
    return f"{figure.name}, the headline figure of {name}" if figure else f"first figure of {name}"


def _effective(notebook: Path, given: Any) -> list[dict[str, Any]]:
    """The parameters a run used: the plan's (``given``, first) over its notebook's defaults.

    Each is ``{"name", "value", "given"}`` (value formatted; ``given``: set by the plan, not the
    notebook's default). The defaults are :func:`~landscape.reports.plans.notebook_defaults` of
    the executed notebook; a value that is not a literal shows as its source text, and a notebook
    that is missing or cannot be read shows none.
    """
    given = dict(given) if isinstance(given, Mapping) else {}
    try:
        declared = notebook_defaults(notebook, non_literal="source")
    except ValueError:  # no notebook yet (a pending run), or one that cannot be read
        declared = {}
    defaults = {k: v for k, v in declared.items() if k not in given}
    defaults.pop(RESERVED_PARAMETER, None)
    return _listed(given, True) + _listed(defaults, False)


def _listed(parameters: Mapping[str, Any], given: bool = True) -> list[dict[str, Any]]:
    return [
        {"name": str(name), "value": _parameter(value), "given": given}
        for name, value in parameters.items()
    ]


def _parameter(value: Any) -> str:
    """A parameter's value in a line: as JSON (strings unquoted) when short, else abbreviated."""
    if isinstance(value, str):
        return format_number(value)
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _PARAMETER_CHARS else format_number(value)


def _index_state(
    run: Run, run_dir: Path, result: RunResult | None, library: str, pending: bool
) -> str:
    """The key of :data:`_BADGES` for a run: this call's outcome, else its state on disk."""
    if pending:
        return "pending"
    if result is not None and result.status in UNFINISHED:
        return result.status  # what happened now, even where nothing could be written
    if not run.notebook.is_file():
        return "missing"
    state = run_state(run, run_dir, fingerprint(run, library))
    if state == "up to date":
        return "succeeded" if result is not None and result.status == "succeeded" else "cached"
    return state


def _file_links(href: str, folder: Path, files: Iterable[str]) -> list[dict[str, str]]:
    """``{"href", "text"}`` of each of ``files`` that exists in ``folder``."""
    return [{"href": f"{href}/{f}", "text": f} for f in files if (folder / f).is_file()]
