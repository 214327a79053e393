"""The few lines a command prints when it ends: where the outputs are, the figures that matter, how long
it took. Losses are shown per task as the mean of the first and the last quarter of the steps (a single
first/last step pair is noise, and a total can rise while the task the user watches improves)."""

from __future__ import annotations

import numpy as np


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def quartile_means(history: list[list[float]], names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """{loss: (mean over the first quarter of the steps, mean over the last quarter)}; ``history`` rows
    are [step, loss_1, ..., loss_n] in the order of ``names``."""
    rows = np.asarray(history, dtype=float).reshape(-1, len(names) + 1)
    quarter = max(1, len(rows) // 4)
    return {name: (float(np.nanmean(rows[:quarter, column])), float(np.nanmean(rows[-quarter:, column])))
            for column, name in enumerate(names, start=1)}


def loss_table(history: list[list[float]], names: tuple[str, ...]) -> list[str]:
    if not history:
        return []
    steps = len(history)
    lines = [f"  {'loss':<10} {'first quarter':>14} {'last quarter':>13}   (mean of {max(1, steps // 4)} of {steps} steps each)"]
    for name, (first, last) in quartile_means(history, names).items():
        trend = "flat" if abs(last - first) <= 0.01 * max(abs(first), 1e-12) else "down" if last < first else "up"
        lines.append(f"  {name:<10} {first:>14.4f} {last:>13.4f}   {trend}")
    return lines


def outputs_block(outputs: dict) -> list[str]:
    return [f"  {name:<12} {path}" for name, path in outputs.items() if path]
