"""Every plotting function runs on synthetic data, labels its axes and uses the expected scales."""

from __future__ import annotations

import importlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.collections import PolyCollection, QuadMesh  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from landscape import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _draw(fig) -> None:
    """Render the figure the way savefig would, so scale and masking errors surface."""
    fig.canvas.draw()


def _bands(ax) -> list[PolyCollection]:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


@pytest.fixture
def default_rc():
    """matplotlib's own defaults inside the test; the session's rcParams are restored after."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        yield dict(matplotlib.rcParams)


def test_importing_plots_leaves_the_global_settings_alone(default_rc):
    for module in (plots.theme, plots.curves, plots.surfaces, plots.spectra, plots):
        importlib.reload(module)
    assert dict(matplotlib.rcParams) == default_rc


def test_figures_get_the_style_without_changing_the_global_settings(default_rc):
    fig, ax = plots.subplots()
    plots.rate_axes(ax)
    k = np.arange(2, 20)
    plots.curve(ax, k, 1.0 / k, stderr=0.1 / k, label="x", color="C1")
    _draw(fig)  # drawn outside the style: what was made inside keeps it
    assert dict(matplotlib.rcParams) == default_rc
    assert tuple(fig.get_size_inches()) == (5.2, 3.6)
    assert ax.xaxis.get_gridlines()[0].get_visible()  # seaborn's whitegrid
    assert ax.xaxis.get_major_ticks()[0].label1.get_fontsize() == 9
    orange = sns.color_palette("colorblind")[1]  # "C1" of the style's palette, line and band alike
    assert to_rgb(ax.get_lines()[0].get_color()) == pytest.approx(orange)
    assert to_rgb(_bands(ax)[0].get_facecolor()[0]) == pytest.approx(orange)


def test_style_and_use_style_set_what_seaborn_set_theme_sets(default_rc):
    with matplotlib.rc_context():
        sns.set_theme(
            style="whitegrid", palette="colorblind", color_codes=False, rc=plots.theme._RC
        )
        theme = dict(matplotlib.rcParams)
    assert theme != default_rc
    with plots.style():
        assert dict(matplotlib.rcParams) == theme
    assert dict(matplotlib.rcParams) == default_rc
    plots.use_style()  # the explicit, global switch a notebook may make
    assert dict(matplotlib.rcParams) == theme


def test_rate_curve_with_band_and_reference_slope():
    fig, ax = plots.subplots()
    k = np.arange(2, 300)
    value = 5.0 / k**2
    plots.rate_axes(ax)
    plots.curve(ax, k, value, stderr=0.2 * value, label="Monte Carlo")
    plots.reference_slope(ax, k, anchor_value=value[0])
    _draw(fig)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "k (number of samples)" and ax.get_ylabel() == r"$\Delta_k$"
    assert len(_bands(ax)) == 1
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["Monte Carlo", "∝ k⁻²"]
    guide = ax.get_lines()[-1]
    assert guide.get_linestyle() == "--"
    np.testing.assert_allclose(guide.get_ydata(), value, rtol=1e-12)  # exactly k^-2 through k=2


def test_band_is_value_plus_minus_two_stderr_without_smoothing():
    fig, ax = plots.subplots()
    k = np.arange(1, 6, dtype=float)
    value = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    stderr = np.full(5, 0.5)
    plots.curve(ax, k, value, stderr=stderr)
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), value)
    vertices = _bands(ax)[0].get_paths()[0].vertices
    assert np.isclose(vertices[:, 1].max(), 6.0) and np.isclose(vertices[:, 1].min(), 0.0)


def test_non_positive_values_on_log_axes_do_not_crash():
    fig, ax = plots.subplots()
    k = np.arange(2, 50)
    value = 1.0 / k**2
    value[[3, 10]] = [0.0, -1e-3]
    value[20] = np.nan
    plots.rate_axes(ax, ylabel="|a_k|")
    plots.curve(ax, k, value, stderr=np.full(k.shape, 0.05))  # band far below zero
    _draw(fig)
    low = _bands(ax)[0].get_paths()[0].vertices[:, 1]
    assert np.nanmin(low) > 0  # clipped at a positive floor
    assert np.isnan(ax.get_lines()[0].get_ydata()[[3, 10]]).all()  # gaps, not fake values
    assert ax.get_ylabel() == "|a_k|"


def test_reference_slope_labels_other_exponents():
    fig, ax = plots.subplots()
    plots.reference_slope(ax, np.arange(1, 10), 1.0, slope=-1)
    plots.reference_slope(ax, np.arange(1, 10), 1.0, slope=-1.5)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "∝ k⁻¹" and "-1.5" in labels[1]


@pytest.mark.parametrize("kind", ["contour", "heatmap"])
@pytest.mark.parametrize("log", [False, True])
def test_surface_2d(kind, log):
    x = np.linspace(-1, 1, 21)
    y = np.linspace(-1, 1, 11)
    Z = np.add.outer(y**2, 2 * x**2) + 0.01
    Z[0, 0] = 0.0  # non-positive on a log colour scale: left blank
    fig, ax = plots.subplots()
    plots.surface_2d(ax, x, y, Z, kind=kind, log=log, cbar_label="L (nats)")
    _draw(fig)
    assert ax.get_xlabel() and ax.get_ylabel()
    colorbar_axes = [a for a in fig.axes if a is not ax]
    assert colorbar_axes and colorbar_axes[0].get_ylabel() == "L (nats)"
    blank = (Z <= 0) if log else np.zeros(Z.shape, bool)
    shown = Z[~blank]
    if kind == "heatmap":  # every cell is Z[i, j] at (x[j], y[i]), the blanks masked
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        cells = np.ma.asarray(mesh.get_array()).reshape(Z.shape)
        np.testing.assert_array_equal(np.ma.getmaskarray(cells), blank)
        np.testing.assert_allclose(cells.compressed(), shown)
        colours = mesh.norm
    else:  # the levels cover the values drawn
        contours = ax.collections[0]
        assert contours.levels[0] <= shown.min() * (1 + 1e-9)
        assert contours.levels[-1] >= shown.max() * (1 - 1e-9)
        colours = contours.norm
    if log:
        assert (colours.vmin, colours.vmax) == pytest.approx((shown.min(), shown.max()))
    (centre,) = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert (centre.get_xdata()[0], centre.get_ydata()[0]) == (0, 0)  # w*


def test_surface_2d_checks_shape_and_kind():
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)
    fig, ax = plots.subplots()
    with pytest.raises(ValueError, match="Z.T"):
        plots.surface_2d(ax, x, y, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="kind"):
        plots.surface_2d(ax, x, y, np.zeros((3, 5)), kind="wireframe")


def test_surface_3d_linear_and_log():
    x = np.linspace(-1, 1, 9)
    y = np.linspace(-0.5, 0.5, 7)
    Z = np.add.outer(y**2, x**2)  # zero at the centre
    fig = plt.figure()
    ax = plots.surface_3d(fig, x, y, Z, position=121)
    ax_log = plots.surface_3d(fig, x, y, Z, log=True, position=122)
    _draw(fig)
    assert ax.get_zlabel() == "loss (nats)" and ax_log.get_zlabel().startswith("log₁₀")


def test_spectrum_scales():
    fig, axes = plots.subplots(1, 3)
    plots.spectrum(axes[0], np.array([3.0, -0.5, 10.0, 0.0, -2e-4]))
    plots.spectrum(axes[1], np.logspace(-3, 2, 20))
    plots.spectrum(axes[2], np.array([1.0, 2.0, 3.0]), label="top-3")
    _draw(fig)
    assert [a.get_yscale() for a in axes] == ["symlog", "log", "linear"]
    assert list(axes[0].get_lines()[0].get_ydata()) == [10.0, 3.0, 0.0, -2e-4, -0.5]
    assert all(a.get_xlabel() and a.get_ylabel() for a in axes)
    with pytest.raises(ValueError, match="scale"):
        plots.spectrum(axes[0], [1.0], scale="loglog")


def test_density_log_with_zeros():
    grid = np.linspace(-1, 5, 200)
    values = np.exp(-((grid - 1) ** 2))
    values[:20] = 0.0
    fig, ax = plots.subplots()
    plots.density(ax, grid, values, label="SLQ")
    _draw(fig)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "eigenvalue λ" and ax.get_ylabel() == "spectral density"
    assert _bands(ax)


def test_curve_accepts_torch_like_and_checks_shapes():
    torch = pytest.importorskip("torch")
    fig, ax = plots.subplots()
    plots.spectrum(ax, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="same length"):
        plots.curve(ax, [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="band"):
        plots.curve(ax, [1, 2], [1, 2], stderr=[0.1, 0.1], band=0)


def test_savefig(tmp_path):
    fig, ax = plots.subplots()
    ax.plot([1, 2], [1, 2])
    assert plots.savefig(fig, None, "nothing") is None
    path = plots.savefig(fig, tmp_path / "run", "delta.png")
    assert path == tmp_path / "run" / "delta.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["delta.png"]  # no temporary file left
    with pytest.raises(ValueError, match="name"):
        plots.savefig(fig, tmp_path, "../escape")
