"""How every face shows a confidence map (per voxel the model's largest class probability, 0..1) over its input.

The map is drawn with Slicer's Inferno colour table over a fixed 0..1 window (dark purple = no class stands out,
yellow = certain) and only where the model is unsure (below the engine's threshold, 0.6 by default): a reader sees
the CT unchanged wherever the model is sure and a coloured flag, semi-transparent so the anatomy stays visible,
where it hesitates. A colour legend (Slicer's color legend display node) appears in each slice view showing the map.
"""

from __future__ import annotations

import slicer

from swinssl_slicer.mrml_io import nodes_by_class

CONFIDENCE_ATTRIBUTE = "SwinSSL.Confidence"
INFERNO_FILE = "Inferno.txt"  # Slicer's colour file (Base/Logic/Resources/ColorFiles/Inferno.txt)
CONFIDENCE_COLOURS = slicer.vtkMRMLColorLogic.GetFileColorNodeID(INFERNO_FILE)  # "vtkMRMLColorTableNodeFileInferno.txt"
OVERLAY_OPACITY = 0.6  # where drawn (unsure voxels only): the colour reads at once, the anatomy under it stays visible
LEGEND_LABELS = 3  # 0.0, 0.5, 1.0
LEGEND_SIZE = (0.1, 0.35)  # short and long side, as fractions of the view: its text (which scales with it) stays readable in small views


def inferno_colour_node(scene):
    """Slicer's Inferno colour table node; where Slicer's colour files are not loaded (slicer-core, the web app)
    an equal node is added under the same singleton tag, hence the same ID, built from matplotlib's Inferno
    (256 colours; the colour map Slicer's file holds). Not saved with the scene: Slicer resolves the ID itself."""
    node = scene.GetNodeByID(CONFIDENCE_COLOURS)
    if node is not None:
        return node
    from matplotlib import colormaps

    inferno = colormaps["inferno"]
    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToUser()
    node.SetNumberOfColors(inferno.N)
    for index in range(inferno.N):
        red, green, blue, _ = inferno(index)
        node.SetColor(index, red, green, blue, 1.0)
    node.SetName("Inferno")
    node.SetSingletonTag(slicer.vtkMRMLColorLogic.GetFileColorNodeSingletonTag(INFERNO_FILE))
    node.SaveWithSceneOff()
    node.HideFromEditorsOn()
    return scene.AddNode(node)


def style_confidence_map(volume, threshold: float) -> None:
    """Inferno over 0..1, drawn only below ``threshold`` (Slicer's display threshold: transparent elsewhere),
    and a colour legend."""
    display = volume.GetDisplayNode()
    display.SetAndObserveColorNodeID(inferno_colour_node(volume.GetScene()).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetAutoThreshold(False)
    display.SetLowerThreshold(0.0)
    display.SetUpperThreshold(threshold)
    display.SetApplyThreshold(True)
    legend = add_legend(volume)
    legend.SetTitleText("Confidence")
    legend.SetLabelFormat("%.1f")
    legend.SetNumberOfLabels(LEGEND_LABELS)
    legend.SetSize(*LEGEND_SIZE)


def add_legend(volume):
    """Slicer's color legend for ``volume`` (shown in the slice views that show the volume). Its node class is
    registered by Slicer's Colors module (vtkSlicerColorLogic::RegisterNodes); trame-slicer wires the plain MRML
    colour logic, which does not register it, so it is registered here when absent."""
    scene = volume.GetScene()
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(volume)
    legend.SetVisibility(True)
    return legend


def show_confidence(scene, confidence_id: str | None, under_id: str | None, shown: bool = True) -> list:
    """Takes every confidence map off the slice views (the maps stay in the scene; their legends follow), then,
    with ``shown``, puts volume node ``confidence_id`` as the foreground, at :data:`OVERLAY_OPACITY`, in every slice
    view whose background is volume node ``under_id``. Returns the slice composite nodes that now show it."""
    composites = nodes_by_class(scene, "vtkMRMLSliceCompositeNode")
    for composite in composites:
        foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if foreground is not None and foreground.GetAttribute(CONFIDENCE_ATTRIBUTE):
            composite.SetForegroundVolumeID(None)
    confidence = scene.GetNodeByID(confidence_id or "")
    if confidence is None or not confidence.GetAttribute(CONFIDENCE_ATTRIBUTE):  # removed (its ID may name another node since)
        shown = False
    showing = [composite for composite in composites if composite.GetBackgroundVolumeID() == under_id] if shown else []
    for composite in showing:
        composite.SetForegroundVolumeID(confidence.GetID())
        composite.SetForegroundOpacity(OVERLAY_OPACITY)
    # vtkMRMLColorLegendDisplayableManager follows a slice composite node's layers only for changes flagged as GUI
    # interactions; a Modified() on the legend makes each view re-check whether it shows the legend's volume.
    for legend in nodes_by_class(scene, "vtkMRMLColorLegendDisplayNode"):
        if legend.GetDisplayableNode() is not None and legend.GetDisplayableNode().GetAttribute(CONFIDENCE_ATTRIBUTE):
            legend.Modified()
    return showing
