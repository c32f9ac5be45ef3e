"""The study's PNGs (matplotlib, Agg): validation loss vs tokens / wall-clock / layer-tokens, and the schedules."""
from __future__ import annotations

import os
from typing import Any

STYLE = {  # case -> (colour, line style)
    "baseline_100": ("black", "-"), "baseline_67": ("black", "--"), "baseline_50": ("black", ":"),
    "cl_100": ("tab:blue", "-"), "ltd_100": ("tab:orange", "-"), "cl_ltd_100": ("tab:green", "-"),
    "cl_ltd_50": ("tab:green", ":"),
}


def _style(name: str) -> tuple[str, str]:
    return STYLE.get(name, ("0.6", "-"))


def write_plots(data: dict[str, Any], out_dir: str, prefix: str) -> list[str]:
    """Write ``{prefix}_loss.png`` and ``{prefix}_schedules.png``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    axes_spec = (("tokens", 1e6, "consumed tokens (M)"), ("seconds", 1.0, "training wall-clock (s)"),
                 ("layer_tokens", 1e6, "layer-tokens (M)"))
    for ax, (key, scale, xlabel) in zip(axes, axes_spec):
        for name, r in runs.items():
            pts = r["validation"]
            if not pts:
                continue
            colour, ls = _style(name)
            ax.plot([p[key] / scale for p in pts], [p["loss"] for p in pts], color=colour, linestyle=ls,
                    marker=".", linewidth=1.2, label=name)
        if data.get("target_valid_loss") is not None:
            ax.axhline(data["target_valid_loss"], color="red", linewidth=0.6, alpha=0.6)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3)
        _zoom(ax, runs)
    if axes[0].has_data():
        axes[0].legend(fontsize=8)
    fig.suptitle("validation loss during training (red line: target = mean final validation loss of the "
                 "baseline_100 seeds)")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{prefix}_loss.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    specs = (("seqlen", "curriculum seqlen (seqlen_truncate)"), ("voc", "vocab-rarity difficulty (percentile)"),
             ("reserved", "random-LTD reserved length"))
    for ax, (key, title) in zip(axes, specs):
        for name, r in runs.items():
            series = r["schedule"].get(key)
            if not series:
                continue
            colour, ls = _style(name)
            ax.plot([s for s, _ in series], [v for _, v in series], color=colour, linestyle=ls, label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{prefix}_schedules.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)
    return paths


def _zoom(ax: Any, runs: dict[str, Any]) -> None:
    """Show the second half of the loss range: the first evaluations (loss ~ log V) would flatten the rest."""
    finals = [r["validation"][-1]["loss"] for r in runs.values() if r["validation"]]
    firsts = [r["validation"][0]["loss"] for r in runs.values() if r["validation"]]
    if finals and firsts:
        low, high = min(finals), max(firsts)
        ax.set_ylim(low - 0.05 * (high - low) - 0.01, low + 0.6 * (high - low) + 0.01)
