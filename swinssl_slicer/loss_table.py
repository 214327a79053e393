"""A training run's loss curves in an MRML scene, without Qt: one table node per run folder (a resumed run goes
on in the same table) plotted by a chart node with one scatter series per loss.

Updates come in batches (all the steps one poll read): one node modification, so one plot re-render, per poll,
not per step. The table is bounded: past :data:`MAX_LOSS_ROWS` rows every second row is dropped (the first and
the latest kept), so a long run keeps its whole curve at a coarser step and the saved scene stays small.
"""

from __future__ import annotations

from pathlib import Path

import vtk

from swinssl_slicer.mrml_io import nodes_by_class

RUN_ATTRIBUTE = "SwinSSL.RunFolder"
MAX_LOSS_ROWS = 2000  # tens of kB per loss column in the saved scene's table file; more points than the plot is wide


def find_or_create(scene, run_folder: Path, kind: str, columns: list[str], table_id: str | None = None, chart_id: str | None = None):
    """(table node, chart node) of ``run_folder``: found by the IDs a run remembers (no scene scan), else by the
    run-folder attribute (Resume, a scene reloaded), else created. ``columns``: the losses after the "step" column."""
    folder = str(Path(run_folder).resolve())

    def ours(node_id, class_name):
        node = scene.GetNodeByID(node_id) if node_id else None
        if node is not None and node.IsA(class_name) and node.GetAttribute(RUN_ATTRIBUTE) == folder:
            return node
        return next((n for n in nodes_by_class(scene, class_name) if n.GetAttribute(RUN_ATTRIBUTE) == folder), None)

    table_node = ours(table_id, "vtkMRMLTableNode")
    chart = ours(chart_id, "vtkMRMLPlotChartNode")
    if table_node is None:
        table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"SwinSSL {kind} losses")
        table_node.SetAttribute(RUN_ATTRIBUTE, folder)
        for name in ["step"] + columns:
            array = vtk.vtkFloatArray()
            array.SetName(name)
            table_node.GetTable().AddColumn(array)
        chart = None  # a chart left over would plot the table that is gone
    if chart is None:  # new, or deleted by the user
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"SwinSSL {kind} loss curves")
        chart.SetAttribute(RUN_ATTRIBUTE, folder)
        chart.SetXAxisTitle("step")
        chart.SetYAxisTitle("loss")
        for name in columns:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
            series.SetAndObserveTableNodeID(table_node.GetID())
            series.SetXColumnName("step")
            series.SetYColumnName(name)
            series.SetPlotType(series.PlotTypeScatter)  # line plots ignore the x column (vtkMRMLPlotSeriesNode::IsXColumnRequired)
            series.SetMarkerStyle(series.MarkerStyleNone)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return table_node, chart


def append_rows(table_node, columns: list[str], rows: list[tuple[int, dict]], max_rows: int = MAX_LOSS_ROWS) -> None:
    """Appends ``rows`` ((step, {column: value or None}), in step order) under one modification of ``table_node``.
    A step at or below the last row's replaces the rows from it on (a resumed run starts again from its checkpoint)."""
    table = table_node.GetTable()
    was_modifying = table_node.StartModify()
    for step, values in rows:
        while table.GetNumberOfRows() and table.GetValue(table.GetNumberOfRows() - 1, 0).ToDouble() >= step:
            table.RemoveRow(table.GetNumberOfRows() - 1)
        row = table.InsertNextBlankRow()
        table.SetValue(row, 0, vtk.vtkVariant(float(step)))
        for index, name in enumerate(columns, start=1):
            value = values.get(name)
            table.SetValue(row, index, vtk.vtkVariant(float(value) if value is not None else float("nan")))
        if table.GetNumberOfRows() > max_rows:
            _thin(table)
    table.Modified()
    table_node.EndModify(was_modifying)


def _thin(table) -> None:
    """Drops every second row, keeping the first and the last (the curve's start and its latest point)."""
    for row in range(table.GetNumberOfRows() - 2, 0, -1):
        if row % 2:
            table.RemoveRow(row)
