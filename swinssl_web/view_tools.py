"""Reading aids on the slice views, from Slicer's own MRML logic: window/level by a left-button drag (Slicer's
``vtkMRMLWindowLevelWidget``, active in the interaction node's AdjustWindowLevel mode), presets and a readout;
orientation letters and the slice offset in mm from each ``vtkMRMLSliceNode``; linked crosshair navigation
(Shift + move: every view jumps to the point, ``vtkMRMLCrosshairNode``).

State keys: ``view_window_preset`` (the preset chosen for the case's volume) and, per slice view, ``<view id>_marks``
(``{"left", "right", "top", "bottom", "offset", "window"}``, drawn over the view by :meth:`ViewTools.slice_view_ui`).
"""

from __future__ import annotations

from slicer import vtkMRMLCrosshairNode, vtkMRMLInteractionNode
from trame.widgets import html
from trame_server import Server
from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui
from trame_slicer.core import SlicerApp, VolumeWindowLevel
from trame_slicer.views import SliceView

from swinssl_slicer.segment_statistics import intensity_unit
from swinssl_web.segment_page import CASE_VIEW_GROUP

# name -> (window, level); None: Slicer's automatic window (MR). The CT ones are Slicer's VolumeDisplayPresets.json
# (Modules/Loadable/Volumes/Resources), soft tissue is the engine's CT preview window -160..240 HU.
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "CT abdomen": (350.0, 40.0), "CT soft tissue": (400.0, 40.0), "CT lung": (1400.0, -500.0), "CT bone": (1000.0, 400.0),
    "CT brain": (100.0, 50.0), "MR auto": None,
}
AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative, positive) along RAS x, y, z
OVERLAY_STYLE = ("position: absolute; inset: 0; pointer-events: none; color: #cfe8ff; font: 13px/1.2 monospace; "
                 "text-shadow: 0 0 3px #000, 0 0 2px #000;")


def direction_letters(vector) -> str:
    """Anatomical direction of an RAS ``vector``: "R", "A", ... ; an oblique one gets the letters of each axis
    it leans along by more than 0.3, strongest first (e.g. "LA")."""
    order = sorted(range(3), key=lambda axis: -abs(vector[axis]))
    return "".join(AXIS_LETTERS[axis][vector[axis] > 0] for axis in order if abs(vector[axis]) > 0.3)


def slice_marks(slice_node) -> dict:
    """What a slice view shows at its edges: the direction each edge faces (from the slice node's SliceToRAS: column
    0 points right on screen, column 1 up, column 2 out of the screen) and where the slice lies, as the RAS coordinate
    of its centre along the axis nearest its normal ("S 139.3 mm": 139.3 mm superior of the origin; "R -2.0 mm": 2 mm left)."""
    matrix = slice_node.GetSliceToRAS()
    right, up, normal = ([matrix.GetElement(row, column) for row in range(3)] for column in range(3))
    axis = max(range(3), key=lambda index: abs(normal[index]))
    return {"left": direction_letters([-v for v in right]), "right": direction_letters(right), "top": direction_letters(up),
            "bottom": direction_letters([-v for v in up]), "offset": f"{'RAS'[axis]} {matrix.GetElement(axis, 3):.1f} mm"}


def window_text(volume) -> str:
    """"W 350 L 40" (whole numbers; 3 digits for volumes in 0..1 units such as training previews), "(auto)" when automatic."""
    display = volume.GetDisplayNode() if volume is not None else None
    if display is None:
        return ""
    window, level = display.GetWindow(), display.GetLevel()
    digits = ".0f" if window >= 10 else ".3g"
    return f"W {window:{digits}} L {level:{digits}}" + (" (auto)" if display.GetAutoWindowLevel() else "")


class ViewTools:
    """Window/level, orientation letters, slice offsets and the crosshair of one app's slice views."""

    def __init__(self, server: Server, slicer_app: SlicerApp) -> None:
        self.server, self.slicer_app = server, slicer_app
        self.views: dict[str, SliceView] = {}  # trame view id -> slice view
        self.windowed: set[str] = set()  # volumes given their first window (a case's volume, when first shown)
        scene = slicer_app.scene
        interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        interaction.SetCurrentInteractionMode(vtkMRMLInteractionNode.AdjustWindowLevel)  # left drag: window/level; an active effect takes it
        server.state.view_window_preset = None

    @property
    def crosshair(self):
        """Slicer's crosshair node (Shift + move places it; every view of the group jumps to it)."""
        node = self.slicer_app.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if node is None:
            node = self.slicer_app.scene.AddNode(vtkMRMLCrosshairNode())
        return node

    def show_crosshair(self, shown: bool) -> None:
        """Draws the crosshair (or not); Shift + move places it and brings the other views to it either way."""
        crosshair = self.crosshair
        crosshair.SetCrosshairMode(vtkMRMLCrosshairNode.ShowBasic if shown else vtkMRMLCrosshairNode.NoCrosshair)
        crosshair.SetCrosshairBehavior(vtkMRMLCrosshairNode.OffsetJumpSlice)

    # --- the views' overlays -------------------------------------------------------------------------
    def slice_view_ui(self, server: Server, view_id: str, view: SliceView) -> None:
        """trame-slicer's gutter (reset, slice slider), then the letters, offset and window drawn over the view."""
        create_vertical_slice_view_gutter_ui(server, view_id, view)
        key = f"{view_id}_marks"
        self.views[view_id] = view
        server.state[key] = {}
        with html.Div(style=OVERLAY_STYLE, classes="swinssl-view-marks", raw_attrs=[f'data-view="{view_id}"']):
            html.Span(f"{{{{ {key}.left }}}}", classes="swinssl-mark-left", style="position: absolute; left: 40px; top: 50%;")
            html.Span(f"{{{{ {key}.right }}}}", classes="swinssl-mark-right", style="position: absolute; right: 6px; top: 50%;")
            html.Span(f"{{{{ {key}.top }}}}", classes="swinssl-mark-top", style="position: absolute; top: 22px; left: 50%;")
            html.Span(f"{{{{ {key}.bottom }}}}", classes="swinssl-mark-bottom", style="position: absolute; bottom: 34px; left: 50%;")
            html.Div(f"{{{{ {key}.offset }}}}", classes="swinssl-mark-offset", style="position: absolute; top: 4px; right: 6px;")
            html.Div(f"{{{{ {key}.window }}}}", classes="swinssl-mark-window", style="position: absolute; top: 20px; right: 6px;")
            html.Div("{{ view_probe.text }}", v_if=(f"view_probe.view === '{view_id}'",), classes="swinssl-probe",
                     style="position: absolute; bottom: 34px; left: 40px;")
        view.modified.connect(lambda changed, key=key: self.update_marks(key, changed))
        self.update_marks(key, view)

    def update_marks(self, key: str, view: SliceView) -> None:
        slice_node = view.get_view_node()
        if slice_node is None:
            return
        background = view.get_background_volume_id()
        volume = self.slicer_app.scene.GetNodeByID(background) if background else None
        if volume is not None and view.get_view_group() == CASE_VIEW_GROUP:
            if background not in self.windowed:
                self.windowed.add(background)
                self.default_window(volume)
            elif not self.shows_preset(volume, self.server.state.view_window_preset):
                self.server.state.view_window_preset = None  # dragged away from it: the choice empties (and may be made again)
        marks = {**slice_marks(slice_node), "window": window_text(volume)} if volume else {}
        if self.server.state[key] != marks:
            self.server.state[key] = marks

    def refresh(self) -> None:
        """Redraws every view's marks (after a change their slice logic does not announce, e.g. a window preset)."""
        for view_id, view in self.views.items():
            self.update_marks(f"{view_id}_marks", view)

    # --- window/level --------------------------------------------------------------------------------
    def set_window(self, volume, preset: str) -> None:
        """Applies a :data:`WINDOW_PRESETS` entry to ``volume``'s display node (None: Slicer's automatic window)."""
        if preset not in WINDOW_PRESETS:
            raise ValueError(f"window preset {preset!r} is not one of {', '.join(WINDOW_PRESETS)}")
        window_level = WINDOW_PRESETS[preset]
        if window_level is None:
            VolumeWindowLevel.get_volume_display_node(volume).AutoWindowLevelOn()
        else:
            VolumeWindowLevel.set_volume_node_window_level(volume, *window_level)
        self.refresh()

    def default_window(self, volume) -> None:
        """A case's volume first shown: a CT in HU opens in the abdominal window, anything else in the automatic one."""
        preset = "CT abdomen" if intensity_unit(volume) == "HU" else "MR auto"
        self.set_window(volume, preset)
        self.server.state.view_window_preset = preset

    @staticmethod
    def shows_preset(volume, preset: str | None) -> bool:
        display = volume.GetDisplayNode()
        if preset not in WINDOW_PRESETS or display is None:
            return False
        window_level = WINDOW_PRESETS[preset]
        if window_level is None:
            return bool(display.GetAutoWindowLevel())
        return not display.GetAutoWindowLevel() and (round(display.GetWindow(), 3), round(display.GetLevel(), 3)) == window_level

    def on_preset_chosen(self, preset: str | None) -> None:
        """The page's choice: applied to the case's volume (the one being segmented and edited)."""
        volume = self.slicer_app.segmentation_editor.active_volume_node
        if preset and volume is not None:
            self.set_window(volume, preset)
