"""Loss curves for the page: the run's loss table (a vtkMRMLTableNode written by TrainingLogic, one row per
logged step) as SVG polyline points in a fixed 0..WIDTH x 0..HEIGHT box, y axis up.

Losses and Dice scores are on different scales (a loss falls from any value, Dice rises within 0..1), so they are
two panels with their own labelled y axis: the losses, and (for fine-tuning) the validation Dice on a fixed 0..1 axis.
"""

from __future__ import annotations

import math

from vtkmodules.vtkCommonDataModel import vtkTable

WIDTH, HEIGHT = 400.0, 200.0
COLOURS = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176")
DICE_COLOUR = "#aed581"
EMPTY_CHART = {"panels": []}


def is_dice(column_name: str) -> bool:
    return "dice" in column_name.lower()


def chart_from_table(table: vtkTable) -> dict:
    """``table``: a vtkTable whose first column is the step. Returns ``{"panels": [...]}``: the losses panel and,
    when the table has Dice columns, a Dice panel; each with its axis label (``kind``: "loss" or "dice"), series
    (name, colour, points, last value) and step and value ranges. No panels before the first finite value."""
    columns = [table.GetColumn(index) for index in range(table.GetNumberOfColumns())]
    rows = table.GetNumberOfRows()
    if len(columns) < 2 or rows == 0:
        return dict(EMPTY_CHART)
    steps = [columns[0].GetValue(row) for row in range(rows)]
    values = {column.GetName(): [column.GetValue(row) for row in range(rows)] for column in columns[1:]}
    losses = {name: series for name, series in values.items() if not is_dice(name)}
    dice = {name: series for name, series in values.items() if is_dice(name)}
    panels = [panel("loss", "Loss", steps, losses, None), panel("dice", "Validation Dice (0 to 1)", steps, dice, (0.0, 1.0))]
    return {"panels": [p for p in panels if p is not None]}


def panel(kind: str, axis_label: str, steps: list[float], series_values: dict[str, list[float]],
          value_range: tuple[float, float] | None) -> dict | None:
    """One chart panel over ``steps``; ``value_range`` fixes the y axis (else 0 or the lowest value, to the highest)."""
    finite = [value for values in series_values.values() for value in values if math.isfinite(value)]
    if not finite:
        return None
    x_min, x_max = min(steps), max(steps)
    y_min, y_max = value_range or (min(0.0, min(finite)), max(finite))
    x_span, y_span = (x_max - x_min) or 1.0, (y_max - y_min) or 1.0
    series = []
    for index, (name, values) in enumerate(series_values.items()):
        points = " ".join(f"{(step - x_min) / x_span * WIDTH:.1f},{HEIGHT - (value - y_min) / y_span * HEIGHT:.1f}"
                          for step, value in zip(steps, values) if math.isfinite(value))
        if points:
            colour = DICE_COLOUR if kind == "dice" else COLOURS[index % len(COLOURS)]
            series.append({"name": name, "colour": colour, "points": points,
                           "last": f"{next(v for v in reversed(values) if math.isfinite(v)):.4g}"})
    return {"kind": kind, "axis_label": axis_label, "series": series, "x_min": x_min, "x_max": x_max,
            "y_min": round(y_min, 4), "y_max": round(y_max, 4)}
