"""What a reader sees: each report opens with its ledger, the index with verdicts and headlines,
claims.html lists every claim, outputs are clean, formulas render offline, figures have alt text.

One module fixture executes a three-run plan (two runs record claims, one fails); the other tests
render notebooks written here with their outputs, without a kernel.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from nbformat.v4 import (
    new_code_cell,
    new_markdown_cell,
    new_notebook,
    new_output,
)
from PIL import Image

from landscape import reports
from landscape.reports import outputs, render


def _png(width: int, height: int, colour: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def _claim(id: str, verdict: str, estimate: float, interval: list, replicates: int = 3) -> dict:
    """A claim as results.json holds it (SPEC §11)."""
    return {
        "id": id,
        "source": "main paper Theorem 1",
        "statement": f"Statement of {id}.",
        "estimate": estimate,
        "interval": interval,
        "level": 0.95,
        "region": {"between": [1.8, 2.2]},
        "verdict": verdict,
        "replicates": replicates,
    }


def _notebook(path: Path, *cells) -> Path:
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = new_code_cell("width = 32\noutput_dir = None", metadata={"tags": ["parameters"]})
    nbformat.write(
        new_notebook(cells=[parameters, *cells], metadata={"kernelspec": kernelspec}), path
    )
    return path


WIDE = base64.b64encode(_png(1200, 300, "blue")).decode()
SMALL = base64.b64encode(_png(8, 8)).decode()


def _recording(claims: list[dict], headline: str) -> str:
    return (
        "import base64, json, pathlib, sys\n"
        "from IPython.display import Image, display\n"
        "from landscape import progress, reports\n"
        "for _ in progress.bar(range(3), desc='a tqdm bar'):\n"
        "    pass\n"
        "print('a warning on stderr', file=sys.stderr)\n"
        f"display(Image(data=base64.b64decode({SMALL!r})))\n"
        f"pathlib.Path(output_dir, 'wide.png').write_bytes(base64.b64decode({WIDE!r}))\n"
        f"reports.record(output_dir, claims=json.loads({json.dumps(claims)!r}), headline={headline!r},\n"
        "               headline_figure='wide.png', alpha=1.98)\n"
        "pathlib.Path(output_dir, 'wide.png')"
    )


pytestmark = pytest.mark.usefixtures("fixed_library_fingerprint")


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Runs first and second record claims and a headline; broken fails after writing to stderr."""
    root = tmp_path_factory.mktemp("render")
    first = [
        _claim("rate_is_two", "holds", 2.0, [1.9, 2.1]),
        _claim("bound_is_tight", "fails", 3.0, [2.9, 3.1]),
    ]
    second = [_claim("bn_narrows", "inconclusive", float("nan"), [float("nan"), float("nan")], 1)]
    caption = new_markdown_cell("*Left:* the measured rate. Then more.")
    _notebook(
        root / "first.ipynb", new_code_cell(_recording(first, "α is 2.0: it holds.")), caption
    )
    _notebook(
        root / "second.ipynb",
        new_code_cell(_recording(second, "Batch-norm: a tie.")),
        new_code_cell(
            "from landscape import claims\n"
            "nan = float('nan')\n"
            "ledger = [claims.claim('bn_narrows', 'Statement of bn_narrows.', nan, [nan, nan],\n"
            "                       {'below': 0}),\n"
            "          claims.claim('gap_rate', 'The gap decays like k⁻².', 2.4, [2.3, 2.5],\n"
            "                       {'between': [1.8, 2.2]})]\n"
            "claims.conclude(output_dir, ledger, headline='Batch-norm: a tie.',\n"
            "                reading='### Reading\\n\\nThe gap decays **faster** than k⁻².')"
        ),
    )
    _notebook(
        root / "broken.ipynb",
        new_code_cell(
            "import sys\nprint('why it broke', file=sys.stderr)\nraise ValueError('kaput')"
        ),
    )
    plan = root / "plan.yaml"
    plan.write_text(
        "name: shown\nruns:\n"
        "  - {name: first, notebook: first.ipynb, description: The first question.,\n"
        "     parameters: {width: 8}}\n"
        "  - {name: second, notebook: second.ipynb}\n"
        "  - {name: broken, notebook: broken.ipynb}\n",
        encoding="utf-8",
    )
    with contextlib.redirect_stdout(io.StringIO()):
        results = reports.run_plan(plan, jobs=2, output_root=root / "out")
    folder = root / "out" / "shown"
    read = lambda path: (folder / path).read_text(encoding="utf-8")  # noqa: E731
    return SimpleNamespace(
        folder=folder,
        results={r.name: r for r in results},
        first=read("first/report.html"),
        second=read("second/report.html"),
        broken=read("broken/failed/report.html"),
        index=read("index.html"),
        claims=read("claims.html"),
    )


def _text(html: str) -> str:
    """The page's text, roughly: tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_report_opens_with_headline_and_ledger(ran):
    assert ran.results["first"].status == "succeeded"
    page = ran.first
    answer = page.index('id="answer"')
    assert (
        page.index('class="lsc-banner"') < answer < page.index('class="jp-Cell')
    )  # notebook after
    section = _text(page[answer : page.index("</section>", answer)])
    assert "α is 2.0: it holds." in section
    assert "1 fails" in section and "1 holds" in section
    assert section.index("Statement of bound_is_tight.") < section.index(
        "Statement of rate_is_two."
    )
    assert "3 [2.9, 3.1] at 95 %" in section and "main paper Theorem 1" in section
    nan_claim = _text(ran.second[ran.second.index('id="answer"') :])
    assert "n/a [n/a, n/a] at 95 %" in nan_claim and "1 inconclusive" in nan_claim


def test_the_reading_opens_the_report_and_is_not_shown_twice(ran):
    page = ran.second
    answer = page[page.index('id="answer"') : page.index("</section>", page.index('id="answer"'))]
    assert "<strong>faster</strong>" in answer  # the reading's markdown, rendered
    assert "The gap decays like k⁻²." in answer  # conclude's ledger replaced the first record's
    notebook_part = page[page.index("</section>", page.index('id="answer"')) :]
    assert "<strong>faster</strong>" not in notebook_part  # the cell's output (ledger + reading) is left out
    stored = json.loads((ran.folder / "second" / "results.json").read_text())
    assert stored["reading"].endswith("decays **faster** than k⁻².")
    assert [(c["id"], c["verdict"]) for c in stored["claims"]] == [
        ("bn_narrows", "inconclusive"),
        ("gap_rate", "fails"),
    ]
    executed = nbformat.read(ran.folder / "second" / "notebook.ipynb", as_version=4)
    shown = executed.cells[-1].outputs  # in Jupyter: headline, ledger and reading
    assert "**Batch-norm: a tie.**" in shown[0]["data"]["text/markdown"]
    assert "| **fails** | The gap decays like k⁻²." in shown[0]["data"]["text/markdown"]


def test_a_run_without_claims_shows_nothing_extra(ran):
    assert 'id="answer"' not in ran.broken


def test_banner_and_index_show_the_same_duration(ran):
    stored = json.loads((ran.folder / "first" / "run.json").read_text())
    shown = f"{stored['duration']:.1f} s"
    assert f"ran {shown}" in ran.first and f"ran {shown}" in ran.index
    assert stored["rendering"] >= 0


def test_index_shows_verdicts_headline_description_parameters_and_figure(ran):
    index = _text(ran.index)
    assert "α is 2.0: it holds." in index and "Batch-norm: a tie." in index
    assert "1 fails 1 holds" in index and "1 inconclusive" in index
    assert "The first question." in index
    assert '<span class="set">width=8</span>' in ran.index  # set by the plan
    assert "<span>width=32</span>" in ran.index  # the notebook's default
    assert "output_dir" not in index and "all numbers" in index and "alpha = 1.98" in index
    assert "rate_is_two" not in index  # the claims are on their own page, not among the numbers
    assert 'href="claims.html"' in ran.index
    assert 'alt="wide.png, the headline figure of first"' in ran.index
    with Image.open(ran.folder / "first" / "thumb.png") as thumb:  # the headline figure, 480 wide
        assert thumb.size == (render.THUMB_WIDTH, 120) and thumb.getpixel((5, 5))[2] > 200


def test_claims_page_lists_the_claims_of_every_run(ran):
    page = _text(ran.claims)
    for statement in ("rate_is_two", "bound_is_tight", "bn_narrows"):
        assert f"Statement of {statement}." in page
    body = ran.claims[ran.claims.index("<tbody>") :]
    rows = re.findall(r"<tr>.*?</tr>", body, re.S)
    runs = [re.search(r'href="(\w+)/report.html"', row).group(1) for row in rows]
    assert runs == ["first", "second", "second", "first"]  # fails ×2, inconclusive, holds
    assert "<script>" in ran.claims and 'data-sort="rank"' in ran.claims
    assert 'href="index.html"' in ran.claims


def test_outputs_are_clean_and_a_traceback_is_kept(ran):
    raw = json.loads((ran.folder / "first" / "notebook.ipynb").read_text())
    streams = [
        o for c in raw["cells"] for o in c.get("outputs", []) if o["output_type"] == "stream"
    ]
    assert streams and not [o for o in streams if "a tqdm bar" in "".join(o["text"])]  # TQDM_DELAY
    for page in (ran.first, ran.second):
        assert page.count("a warning on stderr") == 1  # in the (folded) code only
        assert "PosixPath" not in page
        assert 'data-mime-type="application/vnd.jupyter.stderr"' not in page
    assert 'data-mime-type="application/vnd.jupyter.stderr"' in ran.broken
    assert "ValueError" in ran.broken and "kaput" in ran.broken  # the failed cell's traceback
    assert "<pre>why it broke" in ran.broken  # and what it said on stderr


def test_scripts_and_math_are_local(ran):
    for page in (ran.first, ran.broken, ran.index, ran.claims):
        sources = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", page)
        assert not [s for s in sources if re.match(r"(https?:)?//", s)], sources
        assert not re.search(r"https?://[^\"' ]*\.m?js", page)
    assert 'src="../_static/mathjax/tex-svg-full.js"' in ran.first
    assert 'src="../../_static/mathjax/tex-svg-full.js"' in ran.broken
    assert (ran.folder / "_static" / "mathjax" / "tex-svg-full.js").stat().st_size > 100_000


def test_figures_have_alt_text(ran):
    images = re.findall(r"<img[^>]*>", ran.first)
    assert images and all('alt="' in img for img in images)
    assert 'alt="wide.png; Left: the measured rate."' in ran.first


# ----------------------------------------------------------------------------------------------
# Without a kernel: notebooks written here with their outputs


def _stream(name: str, text: str):
    return new_output("stream", name=name, text=text)


def _plain(kind: str, text: str, **data):
    output = new_output(kind, data={"text/plain": text, **data})
    if kind == "execute_result":
        output.execution_count = 1
    return output


def test_clean_outputs_drops_noise_and_keeps_errors():
    bar = "\rdraws:  50%|#####     | 1/2 [00:01<00:01, 1.0draw/s]\r                \r"
    image = {"image/png": SMALL}
    cells = [
        new_code_cell(
            "x",
            outputs=[
                _stream("stderr", "TqdmWarning: IProgress not found\n"),
                _stream("stdout", f"before\n{bar}\nafter\n"),
                _plain("display_data", "<Figure size 640x480 with 1 Axes>", **image),
                _plain("execute_result", "PosixPath('/tmp/run/fig.png')"),
                _plain("execute_result", "<pandas.io.formats.style.Styler at 0x7f1>"),
                _plain("execute_result", "0.93"),
            ],
        ),
        new_code_cell(
            "boom",
            outputs=[
                _stream("stderr", f"what went wrong\n{bar}"),
                new_output(
                    "error", ename="ValueError", evalue="kaput", traceback=["Traceback", "kaput"]
                ),
            ],
        ),
    ]
    cleaned = outputs.clean_outputs(new_notebook(cells=cells))
    first, failed = (cell.outputs for cell in cleaned.cells)
    assert [o.output_type for o in first] == ["stream", "display_data", "execute_result"]
    assert first[0].text == "before\nafter\n" and first[2].data["text/plain"] == "0.93"
    assert first[1].metadata[outputs.ALT_KEY] == "fig.png"  # named by the Path the cell returned
    assert [o.output_type for o in failed] == ["stream", "error"]
    assert failed[0].text.strip() == "what went wrong" and failed[1].traceback == [
        "Traceback",
        "kaput",
    ]
    assert len(cells[0].outputs) == 6  # the notebook itself is untouched


@pytest.mark.parametrize(
    "text,bare",
    [
        ("PosixPath('/a/b.png')", True),
        ("<Figure size 1320x484 with 2 Axes>", True),
        ("(<matplotlib.legend.Legend at 0x7f>, <matplotlib.legend.Legend at 0x7f>)", True),
        ("[<matplotlib.lines.Line2D at 0x7f16>]", True),
        ("Text(0.5, 1.0, 'title')", True),
        ("<IPython.core.display.Markdown object>", True),
        ("1.98", False),
        ("array([1., 2.])", False),
        ("'<b>'", False),
        ("k < 10 and k > 2", False),
    ],
)
def test_bare_reprs(text, bare):
    assert outputs.is_bare_repr(text) is bare


def test_alt_text_from_saved_names_or_caption(tmp_path):
    image = {"image/png": SMALL}
    cells = [
        new_code_cell(
            'plots.savefig(fig, output_dir, "spectrum")\nplots.savefig(g, output_dir, name="ratio.png")',
            outputs=[_plain("display_data", "<Figure>", **image) for _ in range(2)],
        ),
        new_code_cell(
            'for s in sigmas:\n    plots.savefig(fig, output_dir, f"delta_{s}")',
            outputs=[_plain("display_data", "<Figure>", **image) for _ in range(2)],
        ),
        new_markdown_cell("**What to look at:** whether $\\Delta_k$ falls. More text."),
        new_code_cell("display(fig)", outputs=[_plain("display_data", "<Figure>", **image)]),
        new_markdown_cell("## A new section, not a caption"),
    ]
    cleaned = outputs.clean_outputs(new_notebook(cells=cells))
    alts = [[o.metadata[outputs.ALT_KEY] for o in c.get("outputs", [])] for c in cleaned.cells]
    assert alts[0] == ["spectrum.png", "ratio.png"]
    assert alts[1] == [
        "What to look at: whether Delta_k falls.; figure 1 of 2 of this cell",
        "What to look at: whether Delta_k falls.; figure 2 of 2 of this cell",
    ]
    assert alts[3] == ["figure of cell [None]"]


def test_render_report_without_results_or_record(tmp_path):
    """A notebook rendered on its own: no banner, no ledger, no network."""
    notebook = _notebook(
        tmp_path / "n.ipynb",
        new_markdown_cell("Formula: $\\Delta_k \\approx C k^{-\\alpha}$."),
        new_code_cell("1", outputs=[_plain("execute_result", "1")]),
    )
    html = render.render_report(notebook, tmp_path / "report.html").read_text()
    assert 'class="lsc-banner"' not in html and 'id="answer"' not in html
    assert "require.js" not in html and "cdnjs" not in html and "unpkg" not in html
    assert "$\\Delta_k \\approx C k^{-\\alpha}$" in html  # left for the local MathJax


def test_summary_of_results():
    assert render.summarize_results({"alpha": 2.0}) is None
    summary = render.summarize_results(
        {"headline": " The answer. ", "claims": [_claim("a", "holds", 2.0, [1.9, 2.1])]}
    )
    assert summary["headline"] == "The answer."
    assert summary["counts"] == [{"verdict": "holds", "count": 1, "colour": "#2e7d32"}]
    assert summary["claims"][0]["region"] == "between [1.8, 2.2]"


def test_thumbnail_falls_back_to_the_first_figure(tmp_path):
    notebook = _notebook(
        tmp_path / "n.ipynb",
        new_code_cell("x", outputs=[_plain("display_data", "<Figure>", **{"image/png": SMALL})]),
    )
    (tmp_path / "results.json").write_text(json.dumps({"headline_figure": "missing.png"}))
    assert render.write_thumbnail(notebook, tmp_path / "thumb.png")
    with Image.open(tmp_path / "thumb.png") as thumb:
        assert thumb.size == (8, 8)  # never enlarged
    (tmp_path / "wide.png").write_bytes(base64.b64decode(WIDE))
    (tmp_path / "results.json").write_text(json.dumps({"headline_figure": "/staging/wide.png"}))
    assert render.write_thumbnail(notebook, tmp_path / "thumb.png")  # a path counts by its name
    with Image.open(tmp_path / "thumb.png") as thumb:
        assert thumb.size == (render.THUMB_WIDTH, 120)
