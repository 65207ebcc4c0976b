"""Draw an overload run (tests/chaos/test_overload.py): the backlog and every process's memory over time.

Usage: python benchmarks/overload_plot.py SAMPLES_JSON OUT_PNG

SAMPLES_JSON is the ``samples.json`` the test leaves in its temporary directory
(its path is printed at the end of the run). The upper panel shows the raw
records sent, the records validated (valid events + dead letters) and the
predictions out, with the phases shaded; the lower one each process's RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["draw", "main"]

_PHASE_COLOURS = {"capacity": "#dde8f5", "overload": "#f8d9d4", "work-off": "#e1f0dc"}


def draw(samples: list[dict], out: Path) -> None:
    """The two panels of one run, written to ``out`` (PNG)."""
    t = [s["t"] for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    start = 0
    for i in range(1, len(samples) + 1):
        if i == len(samples) or samples[i]["phase"] != samples[start]["phase"]:
            colour = _PHASE_COLOURS.get(samples[start]["phase"])
            if colour:
                for ax in (top, bottom):
                    ax.axvspan(t[start], t[i - 1], color=colour, lw=0)
                top.text((t[start] + t[i - 1]) / 2, 0.97, samples[start]["phase"], ha="center", va="top",
                         transform=top.get_xaxis_transform(), fontsize=9)
            start = i
    top.plot(t, [s["raw"] / 1e6 for s in samples], label="raw records sent")
    top.plot(t, [s["validated"] / 1e6 for s in samples], label="validated (events + dead letters)")
    top.plot(t, [s["predictions"] / 3e6 for s in samples], label="predictions out / 3 (one per horizon)")
    top.set_ylabel("millions")
    top.legend(loc="upper left", fontsize=8)
    names = sorted({name for s in samples for name in s["rss"]})
    for name in names:
        bottom.plot(t, [s["rss"].get(name) for s in samples], label=name)
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("seconds since the test started sampling")
    bottom.legend(loc="upper left", fontsize=7, ncol=4)
    fig.suptitle("Overload: twice the measured capacity for 5 minutes, then the work-off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        samples = json.loads(args.samples.read_text())
    except (OSError, ValueError) as exc:
        print(f"overload_plot: error: cannot read {args.samples}: {exc}", file=sys.stderr)
        return 2
    if not samples:
        print(f"overload_plot: error: {args.samples} has no samples", file=sys.stderr)
        return 2
    draw(samples, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
