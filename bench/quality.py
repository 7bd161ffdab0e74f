"""Reconstruction quality at the real dose: classical methods against the deep pipeline.

Builds seeded InP/ZnSe/ZnS quantum-dot specimens with the simulator's phantoms
(``resources/specimens/qd_demo.yaml``), projects them, draws Poisson counts at a real dose
(``--counts`` net counts per element and tilt, plus a background under the line) and a
HAADF, then scores every method by PSNR and 3D SSIM per element against the truth, inside
the particles' bounding box after a least-squares scale fit (:mod:`edxtomo.metrics`).

Rows (classical ones with their parameter tuned per element on the truth, which favours
them; the deep pipeline runs with its defaults):

* ``SIRT`` -- iterations in {5, 10, 25, 50, 100};
* ``box11+SIRT`` -- the paper's conventional baseline, 11x11 box prefilter, iterations in
  {25, 50, 100};
* ``Gaussian+SIRT`` -- Gaussian prefilter sigma in {0.5, 1, 1.5, 2, 3} px and iterations in
  {10, 25, 50};
* ``TV-KL`` -- :func:`edxtomo.tomo.tv.tv_kl`, weight in {0.3, 1, 3, 10}, 300 iterations;
* ``TV-KL weight: auto`` -- the same with the weight chosen from count halves
  (:func:`edxtomo.tomo.weights.tv_kl_weights`, no truth), search time included;
* ``deep a: denoise+SIRT300``, ``deep b: denoise+MBIR`` (step b's weight ``auto``, from
  left-out tilts), ``deep b: MBIR truth-tuned weight`` (weight in {0.003, 0.01, 0.03, 0.1,
  0.3} on the same denoised views), ``deep c+d`` (= ``deep``);
* ``SIRT noise-free (300 it.)`` -- the moonshot reference;
* ``fused`` -- :func:`edxtomo.tomo.fused.fused_reconstruct`, HAADF weight 1 (the HAADF's
  own likelihood), TV weight in {0.3, 1, 3} tuned like TV-KL's, 150 iterations; the
  sensitivities (counts per atom) are the simulation's, as a k-factor calibration gives;
* ``deep b: fused step b``, ``deep, mbir.data: fused`` (group ``deepfused``, with ``deep``) --
  steps b-d again on the same denoised maps plus the HAADF, with ``mbir.data: fused`` and the
  simulation's sensitivities;
* group ``float``, float maps with correlated noise (issue 15): the counts are drawn in a
  misaligned raw frame (a sub-pixel shift of +-1.5 px and an axis rotation of +-3 deg per
  tilt), aligned back by linear interpolation, background removed, Gaussian-filtered
  (sigma 1 px) and scaled by 0.37, as an export by other software. ``float: deep
  (recorrupted)`` -- ``deep`` on those floats (``scheme: auto`` picks ``recorrupted``);
  ``float: count path`` -- ``deep`` denoising the raw counts, its views then aligned like
  the floats; ``float: best filtered SIRT`` -- SIRT (100 iterations) after a box 3-11 or
  Gaussian 0.5-3 px prefilter of the floats, each metric maximised on its own. These rows
  also carry the normalised correlation (NCC) with the truth.

``--budget fast`` and ``--mbir-weight`` shorten CPU runs (the tables above them: full budget,
step b's weight ``auto``).

Usage::

    python bench/quality.py --size 64 --seeds 0 1 2 --tilts 13 7 5 --out quality.tsv
    python bench/quality.py --rows float --size 48 --seeds 0 --tilts 13 --budget fast

Prints one markdown table per tilt count: mean +- standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from edxtomo.deep import denoise_projections, reconstruct_deep
from edxtomo.io import TiltSeries
from edxtomo.io.xray import atomic_number
from edxtomo.metrics import correlation, particle_region, psnr, ssim3d
from edxtomo.options import DeepOptions, FusedOptions, channel_weights
from edxtomo.options.deep import MBIR_WEIGHT
from edxtomo.simulate.counts import count_series, phantom_volumes
from edxtomo.simulate.export import exported_floats
from edxtomo.tomo import project, sirt
from edxtomo.tomo.fused import fused_reconstruct
from edxtomo.tomo.tv import mbir_l2, tv_kl
from edxtomo.tomo.weights import chosen_weights, tv_kl_weights

log = logging.getLogger("bench.quality")

PRESET = Path(__file__).resolve().parents[1] / "resources" / "specimens" / "qd_demo.yaml"
ELEMENTS = ["In", "P", "Zn", "Se", "S"]
GROUPS = ("classical", "deep", "reference", "fused", "deepfused", "float")


def deep_options(budget: str = "full", mbir_weight: float | None = None) -> DeepOptions:
    """The deep settings of the rows: the library defaults follow the device (budget auto);
    the tables are measured with one named budget on every device."""
    mbir = {} if mbir_weight is None else {"weight": mbir_weight}
    options = DeepOptions.model_validate({"budget": budget, "mbir": mbir})
    return options.with_budget("cpu")[0]


def make_specimen(size: int, seed: int, angles_deg: np.ndarray, counts: float,
                  background_fraction: float = 0.3):
    """Seeded specimen, its noisy tilt series and its noise-free net projections.

    The background under each line carries ``background_fraction`` of the signal counts
    (:func:`edxtomo.simulate.counts.count_series`).
    """
    spec = yaml.safe_load(PRESET.read_text())
    rng = np.random.default_rng(seed)
    _, densities = phantom_volumes(spec, (size,) * 3, 60.0, rng)
    densities = {e: densities[e] for e in ELEMENTS}
    series, expected = count_series(densities, angles_deg, float(spec["voxel_size_nm"]),
                                    counts, rng, background_fraction)
    return series, np.stack(list(densities.values())), expected


def _scores(volumes: np.ndarray, truth: np.ndarray, region) -> dict[str, tuple[float, float]]:
    return {e: (psnr(volumes[i], truth[i], region), ssim3d(volumes[i], truth[i], region))
            for i, e in enumerate(ELEMENTS)}


def _tuned(candidates: dict, truth, region) -> tuple[dict, dict]:
    """Best PSNR per element over ``{parameter: volumes}``; its SSIM and parameter."""
    best, chosen = {}, {}
    for parameter, volumes in candidates.items():
        for element, score in _scores(volumes, truth, region).items():
            if element not in best or score[0] > best[element][0]:
                best[element], chosen[element] = score, parameter
    return best, chosen


def run_case(size: int, seed: int, n_tilts: int, counts: float, device: str,
             groups: tuple[str, ...] = GROUPS, deep: DeepOptions | None = None) -> list[dict]:
    angles = np.linspace(-60, 60, n_tilts)
    series, truth, expected = make_specimen(size, seed, angles, counts)
    region = particle_region(truth)
    net = np.stack([series.net_counts(e) for e in ELEMENTS])
    gross = np.stack([series.channels[e] for e in ELEMENTS]).astype(np.float32)
    background = np.stack([series.background[e] for e in ELEMENTS])
    rows = []

    def add(method, scores, seconds, parameter=None):
        for element, (p, s, *ncc) in scores.items():
            rows.append({"method": method, "element": element, "seed": seed, "n_tilts": n_tilts,
                         "size_px": size, "counts_per_tilt": counts, "psnr_db": p, "ssim": s,
                         "ncc": ncc[0] if ncc else np.nan,
                         "parameter": None if parameter is None else str(parameter[element]),
                         "time_s": seconds})
        log.info("%s tilts=%d seed=%d %-26s %s (%.0f s)", size, n_tilts, seed, method,
                 " ".join(f"{e}:{p[0]:.2f}" for e, p in scores.items()), seconds)

    if "classical" in groups:
        _classical(angles, net, gross, background, truth, region, seed, device, add)
    deep = deep or deep_options()
    if "deep" in groups:
        _deep(series, angles, truth, region, seed, device, add, deep,
              _sensitivity(expected, truth, angles) if "deepfused" in groups else None)
    if "reference" in groups:
        _reference(expected, angles, truth, region, device, add)
    if "fused" in groups:
        _fused(series, expected, gross, background, angles, truth, region, device, add)
    if "float" in groups:
        _float(series, expected, angles, truth, region, seed, device, add, deep)
    return rows


def _classical(angles, net, gross, background, truth, region, seed, device, add) -> None:
    def sirt_grid(data, iterations, **kwargs):
        return {it: sirt(data, angles, iterations=it, device=device, progress=False, **kwargs)
                for it in iterations}

    t = time.perf_counter()
    scores, chosen = _tuned(sirt_grid(net, (5, 10, 25, 50, 100)), truth, region)
    add("SIRT", scores, time.perf_counter() - t, chosen)
    t = time.perf_counter()
    scores, chosen = _tuned(sirt_grid(net, (25, 50, 100), prefilter="box11"), truth, region)
    add("box11+SIRT", scores, time.perf_counter() - t, chosen)
    t = time.perf_counter()
    gauss = {(s, it): sirt(net, angles, iterations=it, prefilter=f"gaussian:{s}",
                           device=device, progress=False)
             for s in (0.5, 1.0, 1.5, 2.0, 3.0) for it in (10, 25, 50)}
    scores, chosen = _tuned(gauss, truth, region)
    add("Gaussian+SIRT", scores, time.perf_counter() - t, chosen)
    t = time.perf_counter()
    tv = {w: tv_kl(gross, angles, weight=w, iterations=300, background=background,
                   device=device, progress=False) for w in (0.3, 1.0, 3.0, 10.0)}
    scores, chosen = _tuned(tv, truth, region)
    add("TV-KL", scores, time.perf_counter() - t, chosen)
    t = time.perf_counter()
    weights = chosen_weights(tv_kl_weights(gross, angles, ELEMENTS, background=background,
                                           iterations=300, seed=seed, device=device), ELEMENTS)
    auto = tv_kl(gross, angles, weight=weights, iterations=300, background=background,
                 device=device, progress=False)
    add("TV-KL weight: auto", _scores(auto, truth, region), time.perf_counter() - t,
        dict(zip(ELEMENTS, np.round(weights, 3), strict=True)))


def _deep(series, angles, truth, region, seed, device, add, options: DeepOptions,
          sensitivity=None) -> None:
    """The deep rows; with ``sensitivity``, also steps b-d with ``mbir.data: fused``."""
    t = time.perf_counter()
    denoised = denoise_projections(series, seed=seed, device=device,
                                   options=options.denoise, progress=False)
    t_denoise = time.perf_counter() - t
    stack = np.stack([denoised.projections[e] for e in ELEMENTS])
    t = time.perf_counter()
    add("deep a: denoise+SIRT300", _scores(sirt(stack, angles, iterations=300, device=device,
                                                  progress=False), truth, region),
        t_denoise + time.perf_counter() - t)
    t = time.perf_counter()
    result = reconstruct_deep(denoised.projections, angles, options, seed=seed,
                              device=device, progress=False)
    t_rest = time.perf_counter() - t
    mbir = np.stack([result.mbir_volumes[e] for e in ELEMENTS])
    auto = (chosen_weights(result.weight_curves, ELEMENTS) if result.weight_curves
            else channel_weights(options.mbir.weight, ELEMENTS, MBIR_WEIGHT))
    add("deep b: denoise+MBIR", _scores(mbir, truth, region), np.nan,
        dict(zip(ELEMENTS, np.round(auto, 4), strict=True)))
    iterations = options.mbir.outer * options.mbir.inner
    tuned = {w: tv_kl(np.maximum(stack, 0), angles, weight=w, iterations=iterations,
                      device=device, progress=False) for w in (0.003, 0.01, 0.03, 0.1, 0.3)}
    scores, chosen = _tuned(tuned, truth, region)
    add("deep b: MBIR truth-tuned weight", scores, np.nan, chosen)
    add("deep (a+b+c+d)", _scores(np.stack([result.volumes[e] for e in ELEMENTS]), truth,
                                  region), t_denoise + t_rest)
    if sensitivity is None:
        return
    t = time.perf_counter()
    fused_options = options.model_copy(update={"mbir": options.mbir.model_copy(
        update={"data": "fused"})})
    views = {"HAADF": series.channels["HAADF"].astype(np.float32), **denoised.projections}
    fused = reconstruct_deep(views, angles, fused_options, seed=seed, device=device,
                             progress=False, fused=FusedOptions(sensitivity=dict(
                                 zip(ELEMENTS, sensitivity.tolist(), strict=True))))
    add("deep b: fused step b", _scores(np.stack([fused.mbir_volumes[e] for e in ELEMENTS]),
                                        truth, region), np.nan)
    add("deep, mbir.data: fused", _scores(np.stack([fused.volumes[e] for e in ELEMENTS]),
                                          truth, region),
        t_denoise + time.perf_counter() - t)


def _reference(expected, angles, truth, region, device, add) -> None:
    t = time.perf_counter()
    clean_mbir = mbir_l2(expected, angles, weight=MBIR_WEIGHT,
                         device=device, progress=False)
    add("MBIR on noise-free data", _scores(clean_mbir, truth, region), time.perf_counter() - t)
    t = time.perf_counter()
    add("SIRT noise-free (300 it.)",
        _scores(sirt(expected, angles, iterations=300, device=device, progress=False), truth,
                region), time.perf_counter() - t)


def _sensitivity(expected, truth, angles) -> np.ndarray:
    """Counts per atom of each element: what a k-factor calibration measures."""
    return expected.sum(axis=(1, 2, 3)) / project(truth, angles, device="cpu").sum(
        axis=(1, 2, 3))


def _fused(series, expected, gross, background, angles, truth, region, device, add) -> None:
    sensitivity = _sensitivity(expected, truth, angles)
    z = [atomic_number(e) for e in ELEMENTS]
    t = time.perf_counter()
    volumes = {w: fused_reconstruct(gross, background, series.channels["HAADF"], angles, z,
                                    sensitivity, [w] * len(ELEMENTS), haadf_weight=1.0,
                                    device=device, progress=False).volumes
               for w in (0.3, 1.0, 3.0)}
    scores, chosen = _tuned(volumes, truth, region)
    add("fused", scores, time.perf_counter() - t, chosen)


def _float(series, expected, angles, truth, region, seed, device, add,
           options: DeepOptions) -> None:
    """The float-map rows: deep on the exported floats, the count path, best filtered SIRT."""
    raw, floats, align = exported_floats(series, expected, np.random.default_rng(1000 + seed))

    def scores(volumes):
        return {e: (psnr(volumes[e], truth[i], region), ssim3d(volumes[e], truth[i], region),
                    correlation(volumes[e], truth[i], region))
                for i, e in enumerate(ELEMENTS)}

    def deep(maps: TiltSeries, transform) -> dict:
        denoised = denoise_projections(maps, seed=seed, device=device,
                                       options=options.denoise, progress=False)
        views = {e: transform(p).astype(np.float32) for e, p in denoised.projections.items()}
        return reconstruct_deep(views, angles, options, seed=seed, device=device,
                                progress=False).volumes

    t = time.perf_counter()
    add("float: deep (recorrupted)", scores(deep(floats, np.asarray)),
        time.perf_counter() - t)
    t = time.perf_counter()
    add("float: count path", scores(deep(raw, align)), time.perf_counter() - t)
    t = time.perf_counter()
    maps = np.stack([floats.channels[e] for e in ELEMENTS])
    best = {e: [-np.inf] * 3 for e in ELEMENTS}
    chosen = {e: [None] * 3 for e in ELEMENTS}
    for prefilter in [f"box{k}" for k in (3, 5, 7, 9, 11)] + [
            f"gaussian:{s}" for s in (0.5, 1, 1.5, 2, 3)]:
        volumes = sirt(maps, angles, iterations=100, device=device, prefilter=prefilter,
                       progress=False)
        for element, score in scores(dict(zip(ELEMENTS, volumes, strict=True))).items():
            for k in range(3):
                if score[k] > best[element][k]:
                    best[element][k], chosen[element][k] = score[k], prefilter
    add("float: best filtered SIRT", best, time.perf_counter() - t,
        {e: "/".join(c) for e, c in chosen.items()})


def summarise(table: pd.DataFrame) -> str:
    """Markdown tables, one per tilt count: mean +- sd of PSNR (SSIM) over the seeds."""
    out = []
    order = list(dict.fromkeys(table["method"]))
    for n_tilts, part in table.groupby("n_tilts", sort=False):
        stats = part.groupby(["method", "element"]).agg(
            psnr=("psnr_db", "mean"), psnr_sd=("psnr_db", "std"), ssim=("ssim", "mean"),
            ncc=("ncc", "mean"), seeds=("seed", "nunique"))
        seeds = int(stats["seeds"].max())
        out.append(f"\n{n_tilts} tilts over +-60 deg, {part['size_px'].iloc[0]}^3, "
                   f"{part['counts_per_tilt'].iloc[0]:.0f} counts/element/tilt, "
                   f"{seeds} seed(s): PSNR dB mean +- sd (SSIM; NCC for the float rows)\n")
        out.append("| method | " + " | ".join(ELEMENTS) + " |")
        out.append("|---" * (len(ELEMENTS) + 1) + "|")
        for method in order:
            cells = []
            for element in ELEMENTS:
                r = stats.loc[(method, element)]
                sd = "" if np.isnan(r["psnr_sd"]) else f" +- {r['psnr_sd']:.1f}"
                ncc = "" if np.isnan(r["ncc"]) else f", {r['ncc']:.3f}"
                cells.append(f"{r['psnr']:.1f}{sd} ({r['ssim']:.2f}{ncc})")
            out.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="volume edge in voxels")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tilts", type=int, nargs="+", default=[13, 7, 5])
    parser.add_argument("--counts", type=float, default=800.0,
                        help="net counts per element and tilt")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="TSV of every score")
    parser.add_argument("--rows", nargs="+", choices=GROUPS, default=list(GROUPS),
                        help="which groups of rows to compute (deepfused runs with deep)")
    parser.add_argument("--budget", choices=["full", "fast"], default="full",
                        help="training budget of the deep rows")
    parser.add_argument("--mbir-weight", type=float, default=None,
                        help="deep step b's TV weight (default auto, from left-out tilts)")
    parser.add_argument("--mbir-iterations", type=int, default=None,
                        help="deep step b's PDHG iterations (default from the budget)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("edxtomo").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    deep = deep_options(args.budget, args.mbir_weight)
    if args.mbir_iterations:
        deep = deep.model_copy(update={"mbir": deep.mbir.model_copy(
            update={"outer": args.mbir_iterations, "inner": 1})})
    rows = []
    for n_tilts in args.tilts:
        for seed in args.seeds:
            rows += run_case(args.size, seed, n_tilts, args.counts, args.device,
                             tuple(args.rows), deep)
            table = pd.DataFrame(rows)
            if args.out:
                table.to_csv(args.out, sep="\t", index=False, float_format="%.4f")
    print(summarise(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
