"""The data probe, as Slicer's Data Probe module reads it: on every cursor move in a slice view (the crosshair node's
``CursorPositionModifiedEvent``, which Slicer's slice-view interactor sends), the voxel of the view's background
volume under the cursor (IJK, its value in HU for a CT) and the segments drawn there
(``vtkMRMLSegmentationsDisplayableManager2D::GetVisibleSegmentsForPosition``).

State key ``view_probe``: ``{"view": trame view id, "ijk": [i, j, k] or None, "value": float or None, "segments": [names],
"text": one line}``, drawn in that view's lower-left corner (:meth:`swinssl_web.view_tools.ViewTools.slice_view_ui`).
"""

from __future__ import annotations

from slicer import vtkMRMLCrosshairNode, vtkMRMLSegmentationsDisplayableManager2D
from trame_server import Server
from trame_slicer.core import SlicerApp
from vtkmodules.vtkCommonCore import vtkStringArray
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from swinssl_slicer.mrml_io import nodes_by_class
from swinssl_slicer.segment_statistics import intensity_unit
from swinssl_web.view_tools import ViewTools

NOTHING = {"view": "", "ijk": None, "value": None, "segments": [], "text": ""}


def voxel_at(volume, ras) -> tuple[list[int], float] | None:
    """([i, j, k], value) of ``volume``'s voxel whose centre is nearest to the RAS point, None outside the volume
    (transforms on the volume are not applied: the case's volumes have none)."""
    ras_to_ijk = vtkMatrix4x4()
    volume.GetRASToIJKMatrix(ras_to_ijk)
    ijk = [int(round(c)) for c in ras_to_ijk.MultiplyPoint([*ras, 1.0])[:3]]
    image = volume.GetImageData()
    if image is None or any(not 0 <= c < n for c, n in zip(ijk, image.GetDimensions())):
        return None
    return ijk, image.GetScalarComponentAsDouble(*ijk, 0)


class DataProbe:
    """Follows the cursor over the slice views of one app and puts what is under it in ``view_probe``."""

    def __init__(self, server: Server, slicer_app: SlicerApp, view_tools: ViewTools) -> None:
        self.server, self.slicer_app, self.view_tools = server, slicer_app, view_tools
        self.units: dict[str, str] = {}  # volume node id -> "HU" or "" (its look is checked once)
        server.state.view_probe = dict(NOTHING)
        view_tools.crosshair.AddObserver(vtkMRMLCrosshairNode.CursorPositionModifiedEvent, lambda *_: self.update())

    def update(self) -> None:
        crosshair = self.view_tools.crosshair
        xyz = [0.0, 0.0, 0.0]
        slice_node = crosshair.GetCursorPositionXYZ(xyz)
        found = next(((view_id, view) for view_id, view in self.view_tools.views.items() if view.get_view_node() is slice_node), None)
        if slice_node is None or found is None:
            self.server.state.view_probe = dict(NOTHING)
            return
        ras = [0.0, 0.0, 0.0]
        crosshair.GetCursorPositionRAS(ras)
        self.server.state.view_probe = self.probe(*found, ras)

    def probe(self, view_id: str, view, ras: list[float]) -> dict:
        position = "R {:.1f} A {:.1f} S {:.1f}".format(*ras)
        volume_id = view.get_background_volume_id()
        volume = self.slicer_app.scene.GetNodeByID(volume_id) if volume_id else None
        voxel = voxel_at(volume, ras) if volume is not None else None
        if voxel is None:
            return {**NOTHING, "view": view_id, "text": f"{position} (outside the volume)"}
        ijk, value = voxel
        if volume_id not in self.units:
            self.units[volume_id] = intensity_unit(volume)
        unit = self.units[volume_id]
        segments = self.segments_at(view, ras)
        text = f"{position} · IJK ({ijk[0]}, {ijk[1]}, {ijk[2]}) · {value:g}{' ' + unit if unit else ''}" + (f" · {', '.join(segments)}" if segments else "")
        return {"view": view_id, "ijk": ijk, "value": value, "segments": segments, "text": text}

    def segments_at(self, view, ras: list[float]) -> list[str]:
        """Names of the segments drawn at ``ras`` in ``view`` (every visible segmentation)."""
        manager = view.get_displayable_manager_by_class(vtkMRMLSegmentationsDisplayableManager2D)
        names = []
        for segmentation in nodes_by_class(self.slicer_app.scene, "vtkMRMLSegmentationNode"):
            display = segmentation.GetDisplayNode()
            if manager is None or display is None or not display.GetVisibility():
                continue
            ids = vtkStringArray()
            manager.GetVisibleSegmentsForPosition(ras, display, ids, None)
            names += [segmentation.GetSegmentation().GetSegment(ids.GetValue(index)).GetName() for index in range(ids.GetNumberOfValues())]
        return names
