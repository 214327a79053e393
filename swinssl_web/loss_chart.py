"""Loss curves for the page: the run's loss table (a vtkMRMLTableNode written by TrainingLogic, one row per
logged step) as SVG polyline points in a fixed 0..WIDTH x 0..HEIGHT box, y axis up."""

from __future__ import annotations

import math

from vtkmodules.vtkCommonDataModel import vtkTable

WIDTH, HEIGHT = 400.0, 200.0
COLOURS = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176")
EMPTY_CHART = {"series": [], "x_min": 0, "x_max": 0, "y_min": 0, "y_max": 0}


def chart_from_table(table: vtkTable) -> dict:
    """``table``: a vtkTable whose first column is the step. Returns the series (name, colour, points),
    the step range and the value range; empty series when fewer than one finite row."""
    columns = [table.GetColumn(index) for index in range(table.GetNumberOfColumns())]
    rows = table.GetNumberOfRows()
    if len(columns) < 2 or rows == 0:
        return dict(EMPTY_CHART)
    steps = [columns[0].GetValue(row) for row in range(rows)]
    series_values = {column.GetName(): [column.GetValue(row) for row in range(rows)] for column in columns[1:]}
    finite = [value for values in series_values.values() for value in values if math.isfinite(value)]
    if not finite:
        return dict(EMPTY_CHART)
    x_min, x_max = min(steps), max(steps)
    y_min, y_max = min(0.0, min(finite)), max(finite)
    x_span, y_span = (x_max - x_min) or 1.0, (y_max - y_min) or 1.0
    series = []
    for index, (name, values) in enumerate(series_values.items()):
        points = " ".join(f"{(step - x_min) / x_span * WIDTH:.1f},{HEIGHT - (value - y_min) / y_span * HEIGHT:.1f}"
                          for step, value in zip(steps, values) if math.isfinite(value))
        if points:
            series.append({"name": name, "colour": COLOURS[index % len(COLOURS)], "points": points,
                           "last": f"{next(v for v in reversed(values) if math.isfinite(v)):.4g}"})
    return {"series": series, "x_min": x_min, "x_max": x_max, "y_min": round(y_min, 4), "y_max": round(y_max, 4)}
