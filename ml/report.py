"""The evaluation report: markdown with the published anchors side by side, and PNG plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml.metrics import masked_mae, observed_mask

if TYPE_CHECKING:
    from ml.registry import ModelBundle
    from ml.training_set import ExampleMeta

__all__ = ["PUBLISHED", "SplitPredictions", "write_report"]

@dataclass
class SplitPredictions:
    """Targets, model forecasts with intervals and baseline forecasts of one split."""

    y: np.ndarray  # (rows, H)
    meta: ExampleMeta
    predictions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    baselines: dict[str, dict[int, np.ndarray]]


# Published test-set masked MAE / RMSE / MAPE % (DCRNN paper; Graph WaveNet paper).
PUBLISHED: dict[str, dict[int, tuple[float, float, float]]] = {
    "historical average": {15: (4.16, 7.80, 13.0), 30: (4.16, 7.80, 13.0), 60: (4.16, 7.80, 13.0)},
    "DCRNN": {15: (2.77, 5.38, 7.3), 30: (3.15, 6.45, 8.8), 60: (3.60, 7.59, 10.5)},
    "Graph WaveNet": {15: (2.69, 5.15, 6.90), 30: (3.07, 6.22, 8.37), 60: (3.53, 7.37, 10.01)},
}
_SPLIT_NAMES = {"val": "validation", "test": "test"}


def _anchors(bundle: ModelBundle) -> dict[str, dict[int, tuple[float, float, float]]]:
    """The published figures are METR-LA's: shown for a model of that network only."""
    return PUBLISHED if bundle.metadata.get("network", "metr-la") == "metr-la" else {}


def _markdown(result: dict, bundle: ModelBundle, plots: list[str]) -> str:
    network = bundle.metadata.get("network", "metr-la")
    lines = [
        f"# Evaluation of model {bundle.version} (network {network})",
        "",
        f"Masked metrics of the standard protocol on network {network} (targets equal to 0 are ignored; 15 / 30 / 60",
        f"min are the single steps t+3, t+6, t+12). Intervals: split conformal at {bundle.coverage:.0%} nominal "
        "coverage.",
        "The published figures (METR-LA only) are on the test period; validation figures are not directly comparable.",
        "",
    ]
    for split, horizons in result.items():
        lines += [
            f"## {_SPLIT_NAMES.get(split, split)} split",
            "",
            "| horizon | model | MAE | RMSE | MAPE % | coverage | mean width (mph) | rows |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for h, m in horizons.items():
            lines.append(
                f"| {h} min | {m['model']} | {m['mae']:.2f} | {m['rmse']:.2f} | {m['mape']:.2f} | "
                f"{m['coverage']:.1%} | {m['width']:.1f} | {m['n']:,} |"
            )
        for h, m in horizons.items():
            c = m.get("compared")
            if c is not None:
                lines.append(
                    f"| {h} min | {c['model']} (model {c['version']}) | {c['mae']:.2f} | {c['rmse']:.2f} | "
                    f"{c['mape']:.2f} | {c['coverage']:.1%} | {c['width']:.1f} | {c['n']:,} |"
                )
        for name in ("last_value", "historical_average"):
            for h, m in horizons.items():
                b = m["baselines"][name]
                lines.append(
                    f"| {h} min | {name} (this split) | {b['mae']:.2f} | {b['rmse']:.2f} | {b['mape']:.2f} | | | |"
                )
        lines.append("")
    lines += [
        "## Published anchors (test period, masked MAE / RMSE / MAPE %)",
        "",
        "| model | 15 min | 30 min | 60 min |",
        "| --- | --- | --- | --- |",
    ]
    for name, per_h in _anchors(bundle).items():
        cells = [" / ".join(f"{v:g}" for v in per_h[h]) for h in (15, 30, 60)]
        lines.append(f"| {name} (published) | " + " | ".join(cells) + " |")
    for split, horizons in result.items():
        cells = [
            f"{horizons[str(h)]['mae']:.2f} / {horizons[str(h)]['rmse']:.2f} / {horizons[str(h)]['mape']:.2f}"
            if str(h) in horizons else "-"
            for h in (15, 30, 60)
        ]
        lines.append(f"| this model ({_SPLIT_NAMES.get(split, split)}) | " + " | ".join(cells) + " |")
        if all("compared" in horizons.get(str(h), {}) for h in (15, 30, 60)):
            cells = [
                f"{horizons[str(h)]['compared']['mae']:.2f} / {horizons[str(h)]['compared']['rmse']:.2f} / "
                f"{horizons[str(h)]['compared']['mape']:.2f}"
                for h in (15, 30, 60)
            ]
            version = horizons["15"]["compared"]["version"]
            lines.append(f"| model {version} ({_SPLIT_NAMES.get(split, split)}) | " + " | ".join(cells) + " |")
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


def _plot_by_horizon(path: Path, result: dict, anchors: dict) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for split, horizons in result.items():
        hs = [int(h) for h in horizons]
        ax.plot(hs, [horizons[str(h)]["mae"] for h in hs], "o-", label=f"this model ({_SPLIT_NAMES.get(split, split)})")
        for name in ("last_value", "historical_average"):
            ax.plot(hs, [horizons[str(h)]["baselines"][name]["mae"] for h in hs], ".:", label=f"{name} ({split})")
    for name, per_h in anchors.items():
        ax.plot(list(per_h), [v[0] for v in per_h.values()], "x--", label=f"{name} (published, test)")
    ax.set_xlabel("horizon (min)")
    ax.set_ylabel("masked MAE (mph)")
    ax.set_xticks([15, 30, 60])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_by_time_of_day(path: Path, preds: SplitPredictions, horizons: tuple[int, ...], split: str) -> None:
    import matplotlib.pyplot as plt

    hour = (np.asarray(preds.meta.step_ms, dtype=np.int64) % 86_400_000) // 3_600_000
    fig, ax = plt.subplots(figsize=(7, 4))
    for j, h in enumerate(horizons):
        yhat = preds.predictions[h][0]
        y = preds.y[:, j]
        mae = [masked_mae(y[hour == k], yhat[hour == k]) if (hour == k).any() else np.nan for k in range(24)]
        ax.plot(range(24), mae, "o-", label=f"{h} min")
    ax.set_xlabel("hour of day of the forecast origin t")
    ax.set_ylabel("masked MAE (mph)")
    ax.set_title(f"error by time of day ({_SPLIT_NAMES.get(split, split)})")
    ax.set_xticks(range(0, 24, 3))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sensors(path: Path, preds: SplitPredictions, horizons: tuple[int, ...], ids: tuple[str, ...]) -> None:
    import matplotlib.pyplot as plt

    h = horizons[0]
    j = 0
    # The three sensors whose targets vary most (congestion is where intervals matter), over one day.
    y = preds.y[:, j]
    sensors = np.unique(preds.meta.sensor_index)
    spread = [np.nanstd(y[preds.meta.sensor_index == s]) for s in sensors]
    chosen = sensors[np.argsort(spread)[::-1][:3]]
    day_ms = 24 * 60 * 60 * 1000
    start = (preds.meta.step_ms.min() // day_ms + 1) * day_ms  # the first whole day
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 2.6 * len(chosen)), sharex=True, squeeze=False)
    for ax, s in zip(axes[:, 0], chosen, strict=True):
        rows = (preds.meta.sensor_index == s) & (preds.meta.step_ms >= start) & (preds.meta.step_ms < start + day_ms)
        target_h = (preds.meta.step_ms[rows] - start + h * 60_000) / 3_600_000
        yhat, lower, upper = (a[rows] for a in preds.predictions[h])
        ok = observed_mask(y[rows])
        ax.fill_between(target_h, lower, upper, alpha=0.3, label="interval")
        ax.plot(target_h, yhat, lw=1, label=f"forecast ({h} min ahead)")
        ax.plot(target_h[ok], y[rows][ok], ".", ms=2, color="k", label="actual")
        ax.set_ylabel(f"{ids[s]} (mph)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    axes[-1, 0].set_xlabel("hours since the start of the plotted day (target time)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, result: dict, per_split: dict[str, SplitPredictions], bundle: ModelBundle) -> Path:
    """Write ``report.md`` and the plots into ``out``; return the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    plots = [out / "error_by_horizon.png"]
    _plot_by_horizon(plots[0], result, _anchors(bundle))
    split = "test" if "test" in per_split else "val"
    preds = per_split[split]
    plots.append(out / "error_by_time_of_day.png")
    _plot_by_time_of_day(plots[-1], preds, bundle.horizons_min, split)
    plots.append(out / "predicted_vs_actual.png")
    _plot_sensors(plots[-1], preds, bundle.horizons_min, bundle.context.sensor_ids)
    report = out / "report.md"
    report.write_text(_markdown(result, bundle, [str(p) for p in plots]))
    return report
