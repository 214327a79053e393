"""The segment statistics beside the result: volume (mL) and mean ± SD intensity of each segment of the segmentation
being edited, over its volume (:func:`swinssl_slicer.segment_statistics.segment_statistics`, the Slicer module's
table), empty segments flagged. Edits mark the segments they change; :meth:`StatisticsPanel.poll` (twice a second)
recomputes only those, so painting stays fluid.

State key ``seg_statistics``: ``[{"id", "name", "colour" (CSS), "volume" ("992.5 mL"), "intensity" ("65 ± 21 HU"),
"empty" (bool), "ml" (float)}]`` in segment order.
"""

from __future__ import annotations

from slicer import vtkSegmentation
from trame_server import Server
from trame_slicer.core import SlicerApp
from vtkmodules.util.misc import calldata_type
from vtkmodules.vtkCommonCore import VTK_STRING

from swinssl_slicer.segment_statistics import SegmentStatistics, intensity_unit, segment_statistics

SEGMENT_EVENTS = (vtkSegmentation.SegmentAdded, vtkSegmentation.SegmentRemoved, vtkSegmentation.SegmentModified,
                  vtkSegmentation.RepresentationModified)


class StatisticsPanel:
    """Keeps ``seg_statistics`` up to date with the segment editor's segmentation."""

    def __init__(self, server: Server, slicer_app: SlicerApp) -> None:
        self.server, self.slicer_app = server, slicer_app
        self.watched = None  # (segmentation node, volume node, vtkSegmentation, observer tags)
        self.rows: dict[str, SegmentStatistics] = {}
        self.dirty: set[str] | None = None  # segment ids to recompute; None: all of them
        self.unit = ""
        server.state.seg_statistics = []

    def poll(self) -> None:
        editor = self.slicer_app.segmentation_editor
        segmentation, volume = editor.active_segmentation_node, editor.active_volume_node
        if (self.watched[:2] if self.watched else (None, None)) != (segmentation, volume):
            self.watch(segmentation, volume)
        if self.watched is None or self.dirty == set():
            return
        segments = segmentation.GetSegmentation()
        ids = list(segments.GetSegmentIDs())
        wanted = ids if self.dirty is None else [segment_id for segment_id in ids if segment_id in self.dirty]
        self.dirty = set()
        self.rows = {segment_id: row for segment_id, row in self.rows.items() if segment_id in ids}
        self.rows.update({row.segment_id: row for row in segment_statistics(segmentation, volume, wanted)})
        self.server.state.seg_statistics = [self.row(self.rows[segment_id], segments.GetSegment(segment_id)) for segment_id in ids]

    def watch(self, segmentation, volume) -> None:
        """Follows ``segmentation`` over ``volume`` (the editor's; nothing when either is missing)."""
        if self.watched is not None:
            for tag in self.watched[3]:
                self.watched[2].RemoveObserver(tag)
        self.watched, self.rows, self.dirty = None, {}, None
        self.server.state.seg_statistics = []
        if segmentation is None or volume is None:
            return
        segments = segmentation.GetSegmentation()
        tags = [segments.AddObserver(event, self.on_segment_event) for event in SEGMENT_EVENTS]
        self.watched = (segmentation, volume, segments, tags)
        self.unit = intensity_unit(volume)

    @calldata_type(VTK_STRING)  # the segment's id
    def on_segment_event(self, caller, event, segment_id: str | None = None) -> None:
        if self.dirty is not None:
            self.dirty = None if segment_id is None else self.dirty | {segment_id}

    def row(self, statistics: SegmentStatistics, segment) -> dict:
        red, green, blue = (round(255 * c) for c in segment.GetColor())
        return {"id": statistics.segment_id, "name": statistics.name, "colour": f"rgb({red}, {green}, {blue})", "empty": statistics.empty,
                "ml": statistics.volume_ml, "volume": "EMPTY" if statistics.empty else f"{statistics.volume_ml:.1f} mL",
                "intensity": "" if statistics.empty else f"{statistics.mean:.0f} ± {statistics.sd:.0f} {self.unit}".strip()}
