"""SwinSSL Web: one trame app over one MRML scene (trame-slicer's SlicerApp) with the shared SwinSSL logic.

:class:`WebSettings` is what ``swinssl web`` was given; :class:`SwinSSLWebApp` wires trame-slicer's views,
layouts and segment editor to the Segment and Train pages and polls their engine processes; :func:`serve`
runs it until interrupted.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from swinssl_web.access import OneDriver, access_middleware, is_loopback
from swinssl_web.data_roots import DataRoots
from swinssl_web.uploads import UploadInbox

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # off-screen rendering, no X server

from swinssl_slicer.catalogue_logic import CatalogueLogic  # noqa: E402
from swinssl_slicer.segment_logic import SegmentationLogic  # noqa: E402
from swinssl_slicer.training_logic import TrainingLogic, default_training_set  # noqa: E402
from trame.app import TrameApp  # noqa: E402
from trame_slicer import module as trame_slicer_module  # noqa: E402
from trame_slicer.app.logic import LayoutButtonLogic  # noqa: E402
from trame_slicer.app.logic.segmentation import SegmentEditorLogic  # noqa: E402
from trame_slicer.core import SegmentationEditor, SlicerApp  # noqa: E402
from trame_slicer.rca_view import register_rca_factories  # noqa: E402
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition, ViewProps, ViewType  # noqa: E402

from swinssl_web.downloads import ModelDownloads  # noqa: E402
from swinssl_web.main_thread_gc import collect_garbage, collect_on_main_thread_only  # noqa: E402
from swinssl_web.probe import DataProbe  # noqa: E402
from swinssl_web.statistics_panel import StatisticsPanel  # noqa: E402
from swinssl_web.segment_page import SegmentPage  # noqa: E402
from swinssl_web.train_page import PREVIEW_VIEW_GROUP, PREVIEW_VIEWS, TrainPage  # noqa: E402
from swinssl_web.ui import SwinSSLWebUI  # noqa: E402
from swinssl_web.view_tools import ViewTools  # noqa: E402

log = logging.getLogger("swinssl.web")
POLL_SECONDS = 0.5
VIEW_SIZE_SETTLE_SECONDS = 1.5
SEGMENT_LAYOUT, PREVIEW_LAYOUT = "Axial Primary", "SwinSSL previews"


@dataclass
class WebSettings:
    """What ``swinssl web`` was given (see its --help)."""

    host: str = "127.0.0.1"
    port: int = 8080
    data: list[Path] = field(default_factory=list)
    models: Path | None = None
    runs: Path | None = None
    cases: Path | None = None
    token: str | None = None  # required (and set by the CLI) when host is not loopback
    upload_limit_mb: int = 2048
    open_file: Path | None = None  # a volume inside a data root, opened at start (the demo CT)
    extra_models: list[Path] = field(default_factory=list)  # listed besides the models folder (the demo model)
    catalogue: Path | None = None  # the model catalogue offered for download (default: the built-in one)


def preview_layout() -> Layout:
    """Three axial views, one per preview kind, in their own view group (the case's views are untouched)."""
    views = [ViewLayoutDefinition(tag, ViewType.SLICE_VIEW, ViewProps(orientation="Axial", label=tag, group=PREVIEW_VIEW_GROUP))
             for tag in PREVIEW_VIEWS.values()]
    return Layout(LayoutDirection.Horizontal, views)


def attach_effect_pipelines_to_views(slicer_app: SlicerApp) -> None:
    """Gives every segment-editor effect pipeline its view. trame-slicer 2.0.0 creates a view's effect pipelines
    while the view is being built, before the view manager lists it, so they get no view and activating Paint
    fails ('NoneType' object has no attribute 'paint_interaction_stopped'). Call once all views exist."""
    views = slicer_app.view_manager
    for effect_type in SegmentationEditor.builtin_effects:
        for reference in slicer_app.segmentation_editor.get_effect(effect_type).pipelines:
            if (pipeline := reference()) is not None:
                pipeline.SetView(views.get_view(pipeline.GetViewNode()))


class SwinSSLWebApp(TrameApp):
    def __init__(self, settings: WebSettings, server=None) -> None:
        super().__init__(server)
        self.settings = settings
        self.server.enable_module(trame_slicer_module)
        self.slicer_app = SlicerApp()
        self.view_tools = ViewTools(self.server, self.slicer_app)  # window/level, orientation letters, offsets, crosshair
        register_rca_factories(self.slicer_app.view_manager, self.server, slice_view_ui_f=self.view_tools.slice_view_ui)
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.layout_logic = LayoutButtonLogic(self.server, self.slicer_app)
        self.layout_logic.layout_manager.register_layout(PREVIEW_LAYOUT, preview_layout())
        attach_effect_pipelines_to_views(self.slicer_app)
        self.view_tools.show_crosshair(True)
        self.probe = DataProbe(self.server, self.slicer_app, self.view_tools)
        self.statistics = StatisticsPanel(self.server, self.slicer_app)

        from swinssl.models import models_dir

        self.data_roots = DataRoots(settings.data)
        self.uploads = UploadInbox(settings.upload_limit_mb * 1_000_000)
        self.upload_error: str | None = None
        scene = self.slicer_app.scene
        runs = settings.runs or models_dir().parent / "runs"
        segmentation, training = SegmentationLogic(scene), TrainingLogic(scene, runs_root=runs)
        cases = settings.cases or default_training_set()
        self.segment = SegmentPage(self.server, self.slicer_app, segmentation, training, cases, settings.extra_models)
        self.downloads = ModelDownloads(self.server, CatalogueLogic(catalogue=settings.catalogue), self.segment.refresh_models)
        self.train = TrainPage(self.server, self.slicer_app, training, self.data_roots, runs, cases, self.segment.packages)

        state = self.server.state
        state.trame__title = "SwinSSL"
        state.trame__favicon = None  # trame's default points outside: a hospital server makes no outside requests
        state.page, state.error_message, state.upload_limit_mb = "segment", "", settings.upload_limit_mb
        state.seg_upload_percent, state.seg_upload_text = 0, ""  # set by the page while it sends a file (ui.UPLOAD_JS)
        self.users = OneDriver(state)  # one page drives the case and engines; pages opened later watch
        state.swinssl_tab = ""  # each page's own token (made by the page, never sent back): compared with web_driver
        state.client_only("swinssl_tab")
        self.server.add_protocol_to_configure(lambda protocol: protocol.registerLinkProtocol(self.users))
        state.browse_folder, state.browse_parent, state.browse_entries = None, None, []
        state.change("page")(lambda page, **_: self.report(self.on_page_changed, page))
        state.change("train_kind")(lambda **_: self.report(self.show_layout))
        state.change("seg_model")(lambda seg_model, **_: self.report(self.segment.on_model_changed, seg_model))
        state.change("view_window_preset")(lambda view_window_preset, **_: self.report(self.view_tools.on_preset_chosen, view_window_preset))
        state.change("train_init")(lambda train_init, **_: self.report(self.train.on_init_changed, train_init))
        state.change("train_preview_orientation")(lambda train_preview_orientation, **_: self.report(self.train.orient_previews, train_preview_orientation))
        state.change("seg_confidence")(lambda seg_confidence, **_: self.report(self.segment.show_confidence, bool(seg_confidence)))
        self.ui = SwinSSLWebUI(self)
        self.editor_logic.set_ui(self.ui.editor)
        self.layout_logic.set_ui(self.ui.layout_button)
        self.browse(None)
        self.server.controller.on_server_ready.add(self.on_ready)
        self.server.controller.on_client_connected.add(self.on_client_connected)
        self.server.controller.on_server_bind.add(self.on_server_bind)

    def on_server_bind(self, wslink_server) -> None:
        wslink_server.app.middlewares.append(access_middleware(self.settings.token))
        self.users.web_app = wslink_server  # which page a call comes from

    # --- errors shown in the page --------------------------------------------------------------------
    def drive(self, action: Callable, *args) -> object:
        """A page's action: runs as :meth:`act` when that page drives the server; from a watching page, nothing runs
        (its page says why; a message here would show in the driving page too: the pages share their state)."""
        if not self.users.drives():
            log.info("an action from a watching page was refused")
            return None
        return self.act(action, *args)

    def act(self, action: Callable, *args) -> object:
        """A user's action: clears the last error message, then runs ``action`` as :meth:`report` does."""
        self.server.state.error_message = ""
        return self.report(action, *args)

    def report(self, action: Callable, *args) -> object:
        """Runs ``action``; a failure becomes the page's error message (the file and the problem), not a traceback."""
        with self.server.state:  # pushed to the page when the action ends
            try:
                return action(*args)
            except Exception as error:  # noqa: BLE001 (every failure must reach the user)
                text = str(error) if isinstance(error, (OSError, ValueError, RuntimeError)) else f"{type(error).__name__}: {error}"
                self.server.state.error_message = text.strip().splitlines()[0][:400] if text.strip() else type(error).__name__
                log.debug("action failed", exc_info=True)
                return None

    # --- pages -------------------------------------------------------------------------------------
    def show_layout(self) -> None:
        """The three preview views while the Train page is on pretraining (its previews); else the case's views:
        fine-tuning writes no previews, and three empty views would only show black."""
        state = self.server.state
        previews = state.page == "train" and state.train_kind == "pretrain"
        self.layout_logic.data.current_layout_id = PREVIEW_LAYOUT if previews else SEGMENT_LAYOUT
        self.view_tools.show_crosshair(not previews)  # the case's navigation aid; across the preview crops it only hides them

    def on_page_changed(self, page: str) -> None:
        self.show_layout()
        if page == "train":
            self.train.refresh_inits()
        else:
            self.segment.refresh_models()

    def browse(self, folder: str | None) -> None:
        state = self.server.state
        state.browse_entries = [asdict(entry) for entry in self.data_roots.list(folder)]
        state.browse_folder = folder and str(self.data_roots.resolve(folder))
        state.browse_parent = folder and self.data_roots.parent(folder)

    def open_server_path(self, path: str) -> None:
        location = self.data_roots.volume_location(path)
        self.segment.open_case(location, location.name)

    def on_upload_begin(self) -> None:
        """A new upload: a fresh private folder (what an abandoned upload left is removed)."""
        self.upload_error = None
        self.uploads.begin()

    def on_upload_part(self, index: int, offset: int, part: dict) -> bool:
        """A slice of the browser's file number ``index``; False (stop sending) once the upload has failed."""
        if self.upload_error is None:
            try:
                self.uploads.add_part(index, offset, part)
            except ValueError as error:  # over the limit, a lost slice, or not begun
                self.upload_error = str(error)
        return self.upload_error is None

    def on_upload_end(self) -> None:
        """The browser sent every slice (or stopped at a failure): the files are opened as the case."""
        error, self.upload_error = self.upload_error, None
        try:
            if error:
                raise ValueError(error)
            received = self.uploads.files()
            if not received:
                raise ValueError("no file was received")
            name = received[0].name + (f" and {len(received) - 1} more" if len(received) > 1 else "")
            self.segment.open_case(received[0] if len(received) == 1 else self.uploads.folder, name)
        finally:
            self.uploads.clear()

    def download(self, what: str) -> bytes:
        """The edited segmentation (``what`` "segmentation"; "dicom_seg": as a DICOM SEG) or the case's scene, sent to the page as binary."""
        if what == "dicom_seg":
            return self.segment.dicom_seg_bytes()
        return self.segment.segmentation_bytes() if what == "segmentation" else self.segment.scene_bytes()

    def finetune_current_model(self) -> None:
        self.train.finetune_from_model(self.server.state.seg_model)
        self.server.state.page = "train"

    # --- engine polling ------------------------------------------------------------------------------
    def on_ready(self, **_) -> None:
        if self.settings.open_file is not None:
            self.act(self.open_server_path, str(self.settings.open_file))
        host = socket.gethostname() if self.settings.host in ("0.0.0.0", "::") else self.settings.host  # every interface: name one
        address = f"http://{host if ':' not in host else f'[{host}]'}:{self.server.port}/"
        if self.settings.token:
            address += f"?token={self.settings.token}"
        print(f"SwinSSL Web: open {address} in a browser (Ctrl+C stops the server)", flush=True)
        self.polling = asyncio.get_event_loop().create_task(self.poll_forever())  # kept: asyncio holds tasks weakly

    def on_client_connected(self, **_) -> None:
        """A page (re)loaded: lists the models installed since, and fits the views once the page has sized them."""
        self.report(self.segment.refresh_models)
        self.report(self.downloads.refresh)
        self.report(self.train.refresh_inits)
        asyncio.get_event_loop().call_later(VIEW_SIZE_SETTLE_SECONDS, self.slicer_app.display_manager.reset_views)

    async def poll_forever(self) -> None:
        """Follows the engine processes twice a second, and collects Python's cyclic garbage on this (the main)
        thread (see :mod:`swinssl_web.main_thread_gc`); a failure is reported and polling goes on."""
        calls = 0
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                self.report(self.segment.poll)
                self.report(self.statistics.poll)
                self.report(self.train.poll)
                self.report(self.downloads.poll)
            except Exception as error:  # noqa: BLE001 (a failed flush must not end polling)
                log.error("polling failed: %s", type(error).__name__)
            calls += 1
            collect_garbage(calls)

    def close(self) -> None:
        """Cancels a running segmentation and removes uploads (a training run is stopped with a checkpoint)."""
        self.segment.close_case()
        self.downloads.close()
        if self.train.run is not None:
            self.train.stop()
        self.uploads.clear()


def serve(settings: WebSettings) -> int:
    if not is_loopback(settings.host) and not settings.token:
        raise ValueError("a server on a non-loopback address needs an access token")
    if settings.models:  # read by models_dir() here and in the engine subprocesses
        os.environ["SWINSSL_MODELS"] = str(settings.models)
    from vtkmodules.vtkCommonCore import vtkObject

    faulthandler.enable()  # a crash in native code leaves every thread's Python stack in the server's log (no data: code only)
    vtkObject.GlobalWarningDisplayOff()  # views without a volume warn at every render: they would flood the server log
    app = SwinSSLWebApp(settings)
    collect_on_main_thread_only()  # VTK objects are destroyed on the main thread only (swinssl_web.main_thread_gc)
    try:
        app.server.start(host=settings.host, port=settings.port, open_browser=False, show_connection_info=False,
                         disable_logging=True, timeout=0)  # wslink's default stops an idle server after 5 minutes, runs and all
    finally:
        app.close()
    return 0
