"""Figures of the report: one function per figure, each writing a PNG.

Every function takes arrays and tables (never file paths of stage outputs), so that it can
be used from a notebook as well as from the workflow's figure rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from edxtomo.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

FIGURE_DPI = 120


def _save(fig: plt.Figure, path: str | os.PathLike, bbox_inches: str | None = "tight") -> None:
    """Write the PNG and close the figure; ``bbox_inches="tight"`` (an extra drawing pass)
    keeps legends placed outside the axes."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=FIGURE_DPI, bbox_inches=bbox_inches)
    plt.close(fig)


def _display_range(image: np.ndarray) -> tuple[float, float]:
    """0 (or the minimum, when negative) to the 99.9th percentile: robust to hot voxels."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    high = float(np.percentile(finite, 99.9))
    low = min(0.0, float(finite.min()))
    return low, high if high > low else low + 1.0


def densest_planes(volumes: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
    """The (z, y, x) planes with the most signal, summed over the normalised channels.

    Slices through the geometric centre of a field of particles often miss them all; the
    planes with the most signal cut through the particles.
    """
    total = sum(np.clip(v, 0, None) / max(float(np.percentile(v, 99.9)), 1e-12)
                for v in volumes.values())
    return tuple(int(np.argmax(total.sum(axis=tuple(a for a in range(3) if a != axis))))
                 for axis in range(3))


def orthogonal_slices(volume: np.ndarray, planes: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """The three orthogonal slices of a ``(nz, ny, nx)`` volume through ``planes`` (z, y, x).

    Returns
    -------
    dict
        ``"xy"`` ``(ny, nx)``, ``"xz"`` ``(nz, nx)``, ``"yz"`` ``(nz, ny)``.
    """
    z, y, x = planes
    return {"xy": volume[z], "xz": volume[:, y, :], "yz": volume[:, :, x]}


def draw_outline(ax: plt.Axes, mask: np.ndarray, voxel_size_nm: float):
    """The boundary of a 2D ``mask`` ``(rows, cols)`` on an image drawn by ``imshow`` with
    the extent ``(0, cols, rows, 0)`` x the voxel size: row ``i`` at ``(i + 0.5)`` voxels
    from the top, as ``imshow`` puts it.

    Returns
    -------
    matplotlib.contour.QuadContourSet
    """
    rows, cols = mask.shape
    x_nm = (np.arange(cols) + 0.5) * voxel_size_nm
    y_nm = (np.arange(rows) + 0.5) * voxel_size_nm
    return ax.contour(x_nm, y_nm, mask.astype(float), levels=[0.5], colors="cyan",
                      linewidths=0.6)


def plot_orthoslices(
    volumes: Mapping[str, np.ndarray],
    voxel_size_nm: float,
    path: str | os.PathLike,
    title: str = "",
    outlines: np.ndarray | None = None,
) -> None:
    """Orthogonal central slices of each channel, one row per channel.

    Parameters
    ----------
    volumes : mapping of str to ndarray, each (nz, ny, nx)
        Channels to show, in order.
    voxel_size_nm : float
        Voxel size in nm, for the axis extents.
    path : path-like
        Output PNG.
    title : str
        Figure title.
    outlines : ndarray of int, shape (nz, ny, nx), optional
        Label volume whose boundaries are drawn on every slice.
    """
    names = list(volumes)
    planes = densest_planes(volumes)
    # the rows share each column's x axis, labelled once at the bottom: fewer labels to lay
    # out, and tight_layout leaves nothing outside the figure (no tight bounding box)
    fig, axes = plt.subplots(len(names), 3, figsize=(9, 3 * len(names)), squeeze=False,
                             sharex="col")
    label_slices = orthogonal_slices(outlines, planes) if outlines is not None else None
    for row, name in enumerate(names):
        slices = orthogonal_slices(volumes[name], planes)
        low, high = _display_range(volumes[name])
        for col, (plane, image) in enumerate(slices.items()):
            ax = axes[row, col]
            extent = (0, image.shape[1] * voxel_size_nm, image.shape[0] * voxel_size_nm, 0)
            ax.imshow(image, cmap="magma", vmin=low, vmax=high, extent=extent)
            if label_slices is not None:
                draw_outline(ax, label_slices[plane] > 0, voxel_size_nm)
            ax.set_title(f"{name} {plane}", fontsize=9)
            if row == len(names) - 1:
                ax.set_xlabel(f"{plane[0]} (nm)", fontsize=8)
            ax.set_ylabel(f"{plane[1]} (nm)" if plane == "xy" else "z (nm)", fontsize=8)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(f"{title} (planes z={planes[0]}, y={planes[1]}, x={planes[2]})", y=1.0)
    fig.tight_layout()
    _save(fig, path, bbox_inches=None)


def plot_thickness_distributions(particles: pd.DataFrame, path: str | os.PathLike) -> None:
    """Per-element particle mean shell thickness, by sample and method, with 95% intervals.

    One point per particle flagged ``ok`` (jittered), and beside the points the mean over
    those particles with its Student t 95% interval
    (:func:`edxtomo.statistics.mean_interval`) as an error bar; no bar for fewer than two
    particles.

    Parameters
    ----------
    particles : DataFrame
        ``results/tables/particles.tsv``: columns ``sample``, ``method``, ``element``,
        ``thickness_mean_nm`` and ``flag``.
    path : path-like
        Output PNG.
    """
    # imported here: scipy.stats and the thickness package cost every other figure job 0.6 s
    from edxtomo.statistics import mean_interval
    from edxtomo.thickness import FLAG_OK

    ok = particles["flag"] == FLAG_OK
    usable = particles[ok & np.isfinite(particles["thickness_mean_nm"].astype(float))]
    if usable.empty:
        plot_no_data(path, "no particle flagged ok with a measurable shell")
        return
    usable = usable.assign(group=usable["sample"] + " / " + usable["method"])
    groups = list(pd.unique(usable["group"]))
    elements = sorted(usable["element"].unique())
    n_col = min(3, len(elements))
    n_row = -(-len(elements) // n_col)
    fig, axes = plt.subplots(n_row, n_col, figsize=(3.6 * n_col, 3.2 * n_row), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, element in zip(axes.flat, elements, strict=False):
        for i, group in enumerate(groups):
            values = usable.loc[(usable["element"] == element) & (usable["group"] == group),
                                "thickness_mean_nm"].to_numpy(dtype=float)
            if values.size == 0:
                continue
            ax.plot(i - 0.12 + rng.uniform(-0.08, 0.08, values.size), values, "o",
                    color="k", markersize=4, alpha=0.7)
            mean, low, high = mean_interval(values)
            if np.isfinite(low):
                ax.errorbar(i + 0.18, mean, yerr=[[mean - low], [high - mean]], fmt="s",
                            color="C3", capsize=4, markersize=5)
            else:
                ax.plot(i + 0.18, mean, "s", color="C3", markersize=5)
        ax.set_title(f"element = {element}", fontsize=9)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_xlabel("sample / method")
        ax.set_ylabel("mean shell thickness (nm)")
    for ax in list(axes.flat)[len(elements):]:
        ax.set_visible(False)
    fig.suptitle("points: particles (flag ok); red: mean over particles, 95% t interval",
                 fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_shell_maps(
    stacked: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Equal-area thickness maps and solid-angle histograms, per particle and element.

    Parameters
    ----------
    stacked : mapping of str to ndarray
        The arrays of :func:`edxtomo.thickness.stack_shell_maps` (as saved in
        ``thickness_maps.npz``): ``particle`` (n_particle,), ``element`` (n_element,) and
        ``thickness_nm`` (n_particle, n_element, n_theta, n_phi).
    path : path-like
        Output PNG.
    title : str
        Figure title.
    """
    from edxtomo.thickness import sinusoidal_projection, thickness_histogram

    particles, elements = list(stacked["particle"]), list(stacked["element"])
    thickness_nm = np.asarray(stacked["thickness_nm"])
    if not particles:
        plot_no_data(path, "no particles were segmented")
        return
    fig, axes = plt.subplots(
        len(particles), len(elements) + 1, squeeze=False,
        figsize=(2.6 * (len(elements) + 1), 1.7 * len(particles) + 0.6),
    )
    top = float(np.nanmax(thickness_nm)) if np.any(thickness_nm > 0) else 1.0
    edges_nm = np.linspace(0, top, 31)
    for row, particle in enumerate(particles):
        hist_ax = axes[row, -1]
        for col, element in enumerate(elements):
            ax = axes[row, col]
            ax.set_title(f"particle {particle}, {element}", fontsize=8)
            ax.set_axis_off()
            shell = thickness_nm[row, col]
            if not np.all(np.isfinite(shell)):
                continue
            image, theta_deg, x_deg = sinusoidal_projection(shell)
            shown = ax.imshow(np.where(image > 0, image, np.nan), origin="lower", cmap="viridis",
                              vmin=0, vmax=top, aspect="auto",
                              extent=(x_deg[0], x_deg[-1], theta_deg[0], theta_deg[-1]))
            fraction, _ = thickness_histogram(shell, edges_nm)
            hist_ax.step(edges_nm[:-1], fraction, where="post", label=element)
        hist_ax.set_xlabel("thickness (nm)", fontsize=8)
        hist_ax.set_ylabel("solid-angle fraction", fontsize=8)
        hist_ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7)
    fig.colorbar(shown, ax=axes[:, :-1], shrink=0.8, label="thickness (nm)")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_spectrum(spectrum: pd.DataFrame, windows: pd.DataFrame, path: str | os.PathLike,
                  title: str = "") -> None:
    """Summed spectrum with each element's integration and background windows.

    Parameters
    ----------
    spectrum : DataFrame
        ``energy_keV`` and ``counts`` (and optionally ``model_counts``), as written to
        ``extracted/spectrum.tsv``.
    windows : DataFrame
        ``element, line, line_energy_keV, kind, low_keV, high_keV``, as written to
        ``extracted/windows.tsv``; ``kind`` is ``integration`` or ``background``. With an
        ``element_absent`` column, absent elements are labelled so in the legend and named
        under the title.
    path : path-like
        Output PNG.
    title : str
        Figure title.
    """
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.semilogy(spectrum["energy_keV"], np.maximum(spectrum["counts"], 0.5), color="k", lw=0.7,
                label="summed counts")
    if "model_counts" in spectrum:
        ax.semilogy(spectrum["energy_keV"], spectrum["model_counts"], color="tab:red", lw=0.7,
                    label="EDS model")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (element, rows) in enumerate(windows.groupby("element", sort=False)):
        colour = colours[index % len(colours)]
        absent = element in _absent_elements(windows)
        for row in rows.itertuples():
            integration = row.kind == "integration"
            label = f"{element} {row.line}" + (" (absent)" if absent else "")
            ax.axvspan(row.low_keV, row.high_keV, color=colour, alpha=0.3 if integration else 0.12,
                       hatch=None if integration else "//", lw=0,
                       label=label if integration else None)
        line_energy = rows["line_energy_keV"].iloc[0]
        ax.annotate(rows["line"].iloc[0], (line_energy, 1), xycoords=("data", "axes fraction"),
                    ha="center", va="bottom", fontsize=7, color=colour, rotation=90)
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel("counts per channel")
    ax.set_xlim(0, float(spectrum["energy_keV"].max()))
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    absent = _absent_elements(windows)
    if absent:
        title = (f"{title}\n" if title else "") + (
            f"not significantly above background (flagged element_absent): {', '.join(absent)}")
    if title:
        ax.set_title(title, pad=24)
    _save(fig, path)


def _absent_elements(windows: pd.DataFrame) -> list[str]:
    if "element_absent" not in windows:
        return []
    return sorted(windows.loc[windows["element_absent"].astype(bool), "element"].unique())


def plot_no_data(path: str | os.PathLike, message: str) -> None:
    """A placeholder figure that says why there is nothing to show."""
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    _save(fig, path)


def plot_alignment(diagnostics: Mapping[str, np.ndarray], transforms: pd.DataFrame,
                   path: str | os.PathLike, title: str = "") -> None:
    """Sinograms before and after alignment, per-tilt shifts and matching residuals.

    Parameters
    ----------
    diagnostics : mapping
        From :func:`edxtomo.align.align_series`: ``sinogram_before`` and
        ``sinogram_after`` (n_tilt, nx), ``angles_deg`` (n_tilt,), ``pm_residual``
        (n_iter, n_tilt), ``reference`` and ``sinogram_row``.
    transforms : DataFrame
        ``transforms.tsv``: ``angle_deg``, ``shift_x_px``, ``shift_y_px``,
        ``axis_rotation_deg``, ``axis_offset_px``, ``registered``.
    path : path-like
        Output PNG.
    title : str
        Figure title.
    """
    angles = np.asarray(diagnostics["angles_deg"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, key, label in ((axes[0, 0], "sinogram_before", "before"),
                           (axes[0, 1], "sinogram_after", "after")):
        sinogram = np.asarray(diagnostics[key])
        low, high = _display_range(sinogram)
        ax.imshow(sinogram, aspect="auto", cmap="gray", vmin=low, vmax=high,
                  extent=(0, sinogram.shape[1], angles[-1], angles[0]))
        ax.set_title(f"sinogram {label} (row {int(diagnostics['sinogram_row'])}, "
                     f"{diagnostics['reference']})", fontsize=9)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("tilt (deg)")
    bad = ~transforms["registered"].to_numpy(bool)
    shifts = axes[1, 0]
    shifts.plot(transforms["angle_deg"], transforms["shift_x_px"], "o-", label="shift x")
    shifts.plot(transforms["angle_deg"], transforms["shift_y_px"], "s-", label="shift y")
    shifts.plot(transforms["angle_deg"][bad], transforms["shift_x_px"][bad], "x", color="red",
                ms=10, label="not registered")
    shifts.set_xlabel("tilt (deg)")
    shifts.set_ylabel("drift (px)")
    shifts.set_title(f"axis rotation {transforms['axis_rotation_deg'].iloc[0]:.2f} deg, "
                     f"offset {transforms['axis_offset_px'].iloc[0]:.2f} px", fontsize=9)
    shifts.legend(fontsize=7)
    residual = np.asarray(diagnostics["pm_residual"])
    matching = axes[1, 1]
    if residual.size:
        for iteration in (0, len(residual) - 1):
            matching.plot(angles, residual[iteration], "o-",
                          label=f"iteration {iteration + 1}")
        matching.legend(fontsize=7)
    else:
        matching.text(0.5, 0.5, "no projection matching", ha="center", va="center",
                      transform=matching.transAxes)
    matching.set_xlabel("tilt (deg)")
    matching.set_ylabel("reprojection residual")
    matching.set_title("projection matching", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_selfcheck(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Bar plot of the deep self-check (``recon/deep/selfcheck.tsv``): per element, the
    Poisson deviance of ``deep`` and of ``tv`` on held-out counts (lower wins), with the
    margin in percent above each pair; ``skipped`` rows give a placeholder."""
    scored = table[np.isfinite(pd.to_numeric(table["deep_deviance"], errors="coerce"))]
    if scored.empty:
        plot_no_data(path, "deep self-check skipped: "
                     + (str(table["method"].iloc[0]) if len(table) else "no elements"))
        return
    x = np.arange(len(scored))
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(scored), 3))
    ax.bar(x - 0.2, scored["deep_deviance"], 0.4, label="deep", color="tab:blue")
    ax.bar(x + 0.2, scored["tv_deviance"], 0.4, label="tv", color="tab:gray")
    for xi, row in zip(x, scored.itertuples(), strict=True):
        top = max(row.deep_deviance, row.tv_deviance)
        ax.text(xi, top, f"{row.margin_percent:+.1f}%", ha="center", va="bottom",
                color="black" if row.deep_wins else "tab:red", fontsize=8)
    ax.set_xticks(x, scored["element"])
    ax.set_ylabel("Poisson deviance per pixel\n(held-out half B)")
    ax.set_title("deep vs tv on held-out counts (red: deep loses)", fontsize=9)
    ax.set_ylim(0, 1.15 * float(np.max(scored[["deep_deviance", "tv_deviance"]].to_numpy())))
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    _save(fig, path)


def plot_plan(table: pd.DataFrame, fit: pd.DataFrame, lines: list[str],
              path: str | os.PathLike) -> None:
    """Dose against precision (``results/plan/``): one panel per element, one colour per
    tilt scheme. Dots: the measured 95% half-width ``1.96 sd`` of a particle's mean shell
    thickness (:func:`edxtomo.plan.summarize_plan`); solid line: the fit ``1.96 c /
    sqrt(counts)`` (:func:`edxtomo.plan.fit_dose`); crosses: the bias; dashed: the
    target. The recommendation ``lines`` run beneath the panels."""
    elements = list(dict.fromkeys(table["element"]))
    fig, axes = plt.subplots(1, len(elements), figsize=(2.8 * len(elements), 3.2),
                             squeeze=False, sharey=True)
    target = float(fit["target_nm"].iloc[0])
    counts = np.geomspace(table["counts_per_tilt"].min() / 1.5,
                          table["counts_per_tilt"].max() * 1.5, 50)
    for ax, element in zip(axes[0], elements, strict=True):
        for k, (scheme, part) in enumerate(table[table["element"] == element].groupby(
                "scheme", sort=False)):
            color = f"C{k}"
            part = part.sort_values("counts_per_tilt")
            ax.plot(part["counts_per_tilt"], part["interval_width_nm"] / 2, "o", color=color,
                    label=scheme)
            ax.plot(part["counts_per_tilt"], part["bias_nm"].abs(), "x", color=color,
                    label=f"|bias| {scheme}")
            row = fit[(fit["element"] == element) & (fit["scheme"] == scheme)]
            if len(row) and np.isfinite(row["counts_needed"].iloc[0]):
                # 1.96 c / sqrt(counts) = target * sqrt(counts_needed / counts)
                ax.plot(counts, target * np.sqrt(row["counts_needed"].iloc[0] / counts), "-",
                        color=color, lw=1)
        ax.axhline(target, color="gray", ls="--", lw=1, label="target")
        ax.set(xscale="log", yscale="log", title=element, xlabel="counts per element per tilt")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0, 0].set_ylabel("95% half-width of a particle's\nmean thickness (nm)")
    axes[0, -1].legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    fig.text(0.01, -0.12, "\n".join(lines), ha="left", va="top", fontsize=8)
    _save(fig, path)


def plot_weights(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> None:
    """The held-out curves of ``weight: auto`` (``recon/{tv,deep}/weights.tsv``): per
    channel, the held-out score of every candidate weight (each curve divided by its
    minimum, log axes) and the chosen weight as a dot on its curve."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for k, (channel, part) in enumerate(table.groupby("channel", sort=False)):
        part = part.sort_values("weight")
        relative = part["score"] / part["score"].min()
        chosen = float(part["chosen_weight"].iloc[0])
        ax.plot(part["weight"], relative, "o-", color=f"C{k}", label=channel, ms=3)
        ax.plot(chosen, np.interp(np.log(chosen), np.log(part["weight"]), relative), "*",
                color=f"C{k}", ms=12, mec="black")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("regularisation weight")
    ax.set_ylabel("held-out score / its minimum")
    ax.set_title(title or str(table["method"].iloc[0]), fontsize=8)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    _save(fig, path)


def plot_haadf_model(fit: pd.DataFrame, path: str | os.PathLike, title: str = "") -> None:
    """The HAADF model of ``fused`` (``recon/fused/haadf_model.tsv``,
    :func:`edxtomo.tomo.fused.write_fit`): the fitted ``gamma``, scale ``s``, mean offset
    ``b`` and saturation level ``L``, the HAADF weight, and a bar of the shares of the HAADF
    above its offsets that the elements and the residual volume reproject (the rest is
    unexplained)."""
    row = fit.iloc[0]
    explained, residual = float(row["explained_share"]), float(row["residual_share"])
    # fits written before the saturating link have no such column: they were linear
    saturation = float(row.get("saturation_level", np.inf))
    fig, (text, bar) = plt.subplots(1, 2, figsize=(8.5, 2.6), width_ratios=(1.5, 1))
    lines = [f"gamma = {row['gamma']:.2f} +- {row['gamma_sd']:.2f}",
             f"scale s = {row['scale']:.4g} (HAADF per Z^gamma count / k)",
             f"offset b = {row['offset_mean']:.4g} (mean over tilts)",
             f"saturation L = {saturation:.4g} (HAADF units)" if np.isfinite(saturation)
             else "saturation: none (linear HAADF)",
             f"HAADF weight m = {row['haadf_weight']:g} (0: fusion off)",
             f"HAADF noise sigma = {row['haadf_noise_sigma']:.3g}",
             f"bins fitted = {100 * row['inlier_fraction']:.0f}%"]
    text.text(0, 0.5, "\n".join(lines), va="center", family="monospace", fontsize=8)
    text.set_axis_off()
    shares = {"elements": explained, "residual": residual,
              "unexplained": 1.0 - explained - residual}
    colors = ("tab:blue", "tab:orange", "tab:gray")
    bar.barh(list(shares), [100 * v for v in shares.values()], color=colors)
    for y, value in enumerate(shares.values()):
        bar.text(max(100 * value, 0), y, f" {100 * value:.1f}%", va="center", fontsize=8)
    bar.axvline(0, color="black", lw=0.8)
    bar.set_xlabel("share of the HAADF above its offsets (%)")
    bar.invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)
