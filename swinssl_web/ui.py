"""The page: trame-slicer's viewer layout (app bar, tool strip, drawer, view grid) with a Segment and a Train
page in the drawer. Widgets only: every action calls :class:`swinssl_web.app.SwinSSLWebApp` through a
named trigger (``swinssl_*``), whose failures become the red message at the top of the drawer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trame.widgets import client, html
from trame.widgets.vuetify3 import (
    VAlert,
    VBtn,
    VCard,
    VCardText,
    VCardTitle,
    VCheckbox,
    VDataTable,
    VFileInput,
    VList,
    VListItem,
    VProgressLinear,
    VRadio,
    VRadioGroup,
    VSelect,
    VSwitch,
    VTab,
    VTabs,
    VTextField,
)
from trame_slicer.app.ui import LayoutButton, SegmentEditorUI, ViewerLayout
from trame_slicer.app.ui.segmentation import SegmentEditorUndoRedoUI

from swinssl_web.uploads import PART_BYTES
from swinssl_web.view_tools import WINDOW_PRESETS

if TYPE_CHECKING:
    from swinssl_web.app import SwinSSLWebApp

UPLOAD_JS = """
const files = Array.from($event.target.files || []);
const total = files.reduce((sum, file) => sum + file.size, 0);
if (!files.length) {
} else if (total > upload_limit_mb * 1e6) {
  error_message = `${files[0].name}: ${(total / 1e6).toFixed(0)} MB is more than the server accepts (${upload_limit_mb} MB)`;
} else {
  error_message = ''; seg_uploading = true; seg_upload_percent = 0;
  const megabytes = (total / 1e6).toFixed(1), started = Date.now();
  seg_upload_text = `Uploading ${megabytes} MB ...`;
  const input = $event.target;
  (async () => {
    await trigger('swinssl_upload_begin');
    let sent = 0;
    sending: for (const [index, file] of files.entries()) {
      for (let offset = 0; offset === 0 || offset < file.size; offset += PART_BYTES) {
        const part = new window.File([file.slice(offset, offset + PART_BYTES)], file.name);
        if (!(await trigger('swinssl_upload_part', [index, offset, part]))) break sending;
        sent += part.size;
        const seconds = (Date.now() - started) / 1000, left = sent < total ? (total - sent) * seconds / sent : 0;
        seg_upload_percent = Math.floor(100 * sent / Math.max(total, 1));
        seg_upload_text = sent < total ? `Uploaded ${seg_upload_percent}% of ${megabytes} MB, about ${Math.ceil(left)} s left`
                                      : `Uploaded ${megabytes} MB in ${seconds.toFixed(0)} s; reading it ...`;
      }
    }
    await trigger('swinssl_upload_end');
  })().finally(() => { seg_uploading = false; seg_upload_text = ''; input.value = ''; });
}
""".replace("PART_BYTES", str(PART_BYTES))

CHART_SVG = """
<div v-for="panel in train_chart.panels" :key="panel.kind" :class="'mb-2 swinssl-chart-' + panel.kind">
  <svg viewBox="-62 -12 482 240" style="width: 100%; background: #1e1e1e;"
       :class="panel.kind === 'loss' ? 'swinssl-loss-chart' : 'swinssl-dice-chart'">
    <line x1="0" y1="200" x2="400" y2="200" stroke="#888" stroke-width="1"/>
    <line x1="0" y1="0" x2="0" y2="200" stroke="#888" stroke-width="1"/>
    <text x="-6" y="6" fill="#bbb" font-size="11" text-anchor="end">{{ panel.y_max }}</text>
    <text x="-6" y="200" fill="#bbb" font-size="11" text-anchor="end">{{ panel.y_min }}</text>
    <text x="-48" y="100" fill="#ddd" font-size="12" text-anchor="middle" transform="rotate(-90 -48 100)"
          class="swinssl-chart-axis">{{ panel.axis_label }}</text>
    <text x="0" y="216" fill="#bbb" font-size="11">step {{ panel.x_min }}</text>
    <text x="400" y="216" fill="#bbb" font-size="11" text-anchor="end">{{ panel.x_max }}</text>
    <polyline v-for="line in panel.series" :key="line.name" :points="line.points" fill="none" :stroke="line.colour"
              stroke-width="1.5" :class="panel.kind === 'loss' ? 'swinssl-loss-line' : 'swinssl-dice-line'"/>
  </svg>
  <div style="display: flex; flex-wrap: wrap; gap: 8px; font-size: 12px;">
    <span v-for="line in panel.series" :key="line.name" :style="{ color: line.colour }">{{ line.name }} {{ line.last }}</span>
  </div>
</div>
"""

WATCHING = "!!web_driver && web_driver !== swinssl_tab"  # another page drives the server (swinssl_web.access.OneDriver)
INERT_WHILE_WATCHING = f':inert="{WATCHING}"'  # no clicks, keys or focus in a watching page's controls and views
REPLACE_ITEM = "{key} = {key}.map((item, i) => i === index ? {value} : item)"  # a new array: the client sends whole keys only
DOWNLOAD_JS = ("trigger('swinssl_download', ['{what}'])"
               ".then(content => content && utils.download({name}, content, 'application/octet-stream'))")  # none: the error shows
EVENT_HEADERS = [{"title": "Step", "key": "step"}, {"title": "Event", "key": "event"}, {"title": "Detail", "key": "detail"}]


class SwinSSLWebUI:
    def __init__(self, app: SwinSSLWebApp) -> None:
        self.app = app
        server = app.server
        self.register_triggers()
        with ViewerLayout(server, title="SwinSSL", is_drawer_visible=True) as self.layout:
            with self.layout.appbar:
                with VTabs(v_model=("page",), density="compact", classes="ml-4", disabled=(WATCHING,)):
                    VTab("Segment", value="segment", classes="swinssl-tab-segment")
                    VTab("Train", value="train", classes="swinssl-tab-train")
                VSelect(label="Window", items=("view_window_presets", list(WINDOW_PRESETS)), v_model=("view_window_preset",), density="compact",
                        hide_details=True, variant="outlined", style="max-width: 170px;", classes="ml-4 swinssl-window-preset",
                        v_show="page === 'segment'", disabled=(WATCHING,))
            self.layout.drawer.width = 400
            with self.layout.drawer:
                client.ClientTriggers(mounted="swinssl_tab = swinssl_tab || Math.random().toString(36).slice(2) + Date.now().toString(36);"
                                              "trigger('swinssl_hello', [swinssl_tab])")  # mounted again when the layout changes
                VAlert(v_if=(WATCHING,), type="info", density="compact", classes="ma-2 swinssl-watching",
                       text="This server is in use in another tab or browser: it holds one case and one engine, so one page "
                            "works on it at a time. This page can watch only; it takes over when the other page is closed.")
                VAlert(v_if=("error_message",), text=("error_message",), type="error", density="compact", closable=True,
                       classes="ma-2 swinssl-error", click_close="error_message = ''")
                with html.Div(v_show="page === 'segment'", classes="swinssl-segment-page", raw_attrs=[INERT_WHILE_WATCHING]):
                    self.segment_page()
                with html.Div(v_show="page === 'train'", classes="swinssl-train-page", raw_attrs=[INERT_WHILE_WATCHING]):
                    self.train_page()
            with self.layout.toolbar, html.Div(raw_attrs=[INERT_WHILE_WATCHING]):
                self.layout_button = LayoutButton(classes="mt-1")
            with self.layout.undo_redo, html.Div(raw_attrs=[INERT_WHILE_WATCHING]):
                SegmentEditorUndoRedoUI(editor_ui=self.editor, v_if="page === 'segment'")
            with self.layout.content, html.Div(classes="d-flex flex-row fill-height swinssl-views", style="width: 100%;",
                                               raw_attrs=[INERT_WHILE_WATCHING]):
                app.layout_logic.layout_manager.initialize_layout_grid(self.layout)

    def register_triggers(self) -> None:
        app, trigger = self.app, self.app.server.trigger
        actions = {
            "swinssl_browse": app.browse, "swinssl_open": app.open_server_path, "swinssl_upload_begin": app.on_upload_begin,
            "swinssl_upload_part": app.on_upload_part, "swinssl_upload_end": app.on_upload_end,
            "swinssl_segment": app.segment.segment, "swinssl_cancel": app.segment.cancel, "swinssl_download": app.download,
            "swinssl_add_case": app.segment.add_to_training_set, "swinssl_finetune_current": app.finetune_current_model,
            "swinssl_use_folder": app.train.add_data_folder, "swinssl_drop_folder": app.train.remove_data_folder,
            "swinssl_pretrain": app.train.start_pretraining, "swinssl_finetune": app.train.start_finetuning,
            "swinssl_stop": app.train.stop, "swinssl_fetch_model": app.downloads.start,
        }
        for name, action in actions.items():
            trigger(name)(lambda *args, action=action: app.drive(action, *args))
        trigger("swinssl_hello")(app.users.hello)

    # --- shared pieces -----------------------------------------------------------------------------
    def data_browser(self, action: str, label: str, folders_only: bool) -> None:
        """The server's data folders: click a folder to go in; ``label`` runs ``action`` on an entry."""
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("Server data", classes="text-subtitle-2")
            with VList(density="compact", max_height=220, classes="swinssl-browser"):
                VListItem(v_if=("browse_folder",), prepend_icon="mdi-arrow-up", title="..",
                          click="trigger('swinssl_browse', [browse_parent])")
                VListItem(v_if=("!browse_entries.length",), title="Nothing here (swinssl web --data FOLDER adds folders)")
                with VListItem(v_for="entry in browse_entries", key="entry.path", title=("entry.name",),
                               prepend_icon=("entry.is_folder ? 'mdi-folder' : 'mdi-file'",),
                               click="entry.is_folder && trigger('swinssl_browse', [entry.path])",
                               classes="swinssl-entry"):
                    with html.Template(v_slot_append=True):
                        VBtn(label, size="small", variant="tonal", classes=f"swinssl-{action}",
                             v_if=("entry.is_folder" if folders_only else "true",),
                             raw_attrs=[f'@click.stop="trigger(\'swinssl_{action}\', [entry.path])"'])

    # --- Segment page ------------------------------------------------------------------------------
    def segment_page(self) -> None:
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("1. Open a volume", classes="text-subtitle-2")
            with VCardText():
                VFileInput(label="Upload NIfTI / NRRD / DICOM files", multiple=True, density="compact",
                           loading=("seg_uploading", False), disabled=("seg_uploading",), hide_details=True,
                           classes="swinssl-upload", change=UPLOAD_JS)
                with html.Div(v_if=("seg_uploading",), classes="mt-1 swinssl-upload-progress"):
                    VProgressLinear(model_value=("seg_upload_percent",), height=6, color="primary")
                    html.Div("{{ seg_upload_text }}", classes="text-caption swinssl-upload-text")
                html.Div("{{ seg_case_name ? 'Open: ' + seg_case_name : 'No volume open' }}", classes="text-caption mt-1 swinssl-case")
                html.Div("{{ line }}", v_for="line in seg_case_details", key="line", classes="text-caption swinssl-case-details")
        self.data_browser("open", "Open", folders_only=False)
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("2. Segment", classes="text-subtitle-2")
            with VCardText():
                VSelect(label="Model", items=("seg_models",), v_model=("seg_model",), density="compact", hide_details=True,
                        classes="swinssl-model")
                html.Div("{{ seg_model_info }}", classes="text-caption my-1 swinssl-model-info")
                html.Div("{{ seg_model_trained }}", v_if=("seg_model_trained",), classes="text-caption mb-1 text-medium-emphasis swinssl-model-trained")
                VSelect(v_for="(modality, index) in seg_channels", key="index", label=("'Input ' + (index + 1) + ': ' + modality",),
                        items=("seg_volumes",), model_value=("seg_inputs[index]",), density="compact", hide_details=True,
                        update_modelValue=REPLACE_ITEM.format(key="seg_inputs", value="$event"), classes="mb-1 swinssl-input")
                VCheckbox(label="Confidence map (where the model is unsure)", v_model=("seg_confidence",), density="compact",
                          hide_details=True, classes="swinssl-confidence")
                VSelect(label="Inference engine", items=("seg_backends",), v_model=("seg_backend",), density="compact",
                        hide_details=True, classes="mb-2 swinssl-backend")  # auto: OpenVINO on the CPU
                VBtn("Segment", v_if=("!seg_running",), color="primary", block=True, classes="swinssl-segment",
                     disabled=("!seg_model || !seg_volumes.length",), click="trigger('swinssl_segment')")
                VBtn("Cancel", v_else=True, color="error", block=True, classes="swinssl-cancel", click="trigger('swinssl_cancel')")
                VProgressLinear(model_value=("seg_progress",), indeterminate=("seg_running && !seg_progress",), height=6,
                                classes="my-2 swinssl-progress", color="primary")  # moving while the model loads
                html.Div("{{ seg_message }}", classes="text-caption swinssl-message")
                VAlert(v_for="warning in seg_warnings", key="warning", text=("warning",), type="warning", density="compact",
                       variant="tonal", classes="mt-1 text-caption swinssl-fit-warning")
                VCheckbox(v_if=("seg_mismatch",), label="Segment anyway: I know this input is not what the model was trained on",
                          v_model=("seg_allow_mismatch",), density="compact", hide_details=True, classes="swinssl-allow-mismatch")
                with html.Div(v_if=("seg_plausibility.length",), classes="mt-2 pa-2 swinssl-plausibility",
                              style="border: 1px solid rgba(128, 128, 128, 0.4); border-radius: 4px;"):
                    html.Div("Result check (volumes, confidence, what is missing)", classes="text-caption font-weight-bold")
                    html.Div("{{ line }}", v_for="line in seg_plausibility", key="line", classes="text-caption swinssl-plausibility-line")
                with html.Div(v_if=("seg_confidence_legend",), classes="mt-2 swinssl-confidence-legend"):
                    html.Div(style=("seg_confidence_legend.style",))
                    with html.Div(classes="d-flex justify-space-between text-caption"):
                        html.Span("0 unsure")
                        html.Span("1 sure")
                    html.Div("Confidence map in Inferno colours, drawn below {{ seg_confidence_legend.threshold }} where the model is unsure; "
                             "the CT is left clear where it is sure.", classes="text-caption text-medium-emphasis")
                self.segment_statistics()
        self.model_downloads()
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("3. Correct", classes="text-subtitle-2")
            with html.Div(style="height: 480px;", classes="swinssl-editor"):
                self.editor = SegmentEditorUI()
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("4. Save and retrain", classes="text-subtitle-2")
            with VCardText():
                VBtn("Download .seg.nrrd", prepend_icon="mdi-download", variant="tonal", block=True, classes="mb-1 swinssl-download-seg",
                     click=DOWNLOAD_JS.format(what="segmentation", name="(seg_download_stem || 'segmentation') + '.seg.nrrd'"))
                VBtn("Download DICOM SEG", prepend_icon="mdi-download", variant="tonal", block=True, classes="mb-1 swinssl-download-dicom-seg",
                     v_if=("seg_dicom",), click=DOWNLOAD_JS.format(what="dicom_seg", name="(seg_download_stem || 'segmentation') + '.dcm'"))
                VBtn("Download scene .mrb", prepend_icon="mdi-download", variant="tonal", block=True, classes="mb-1 swinssl-download-mrb",
                     click=DOWNLOAD_JS.format(what="scene", name="(seg_download_stem || 'scene') + '.mrb'"))
                VBtn("Add to training set", prepend_icon="mdi-plus", variant="tonal", block=True, classes="mb-1 swinssl-add-case",
                     click="trigger('swinssl_add_case')")
                VTextField(label="Fine-tuning steps", v_model_number=("seg_tune_steps",), type="number", density="compact",
                           hide_details=True, classes="mb-1 swinssl-finetune-steps")
                VBtn("Fine-tune on the training set", prepend_icon="mdi-school", variant="tonal", block=True,
                     classes="swinssl-finetune-current", disabled=("!seg_cases",), click="trigger('swinssl_finetune_current')")
                html.Div("{{ seg_cases }} case(s) in the training set", classes="text-caption mt-1 swinssl-cases")

    def segment_statistics(self) -> None:
        """Each segment's volume and intensity now (updated after edits; :mod:`swinssl_web.statistics_panel`)."""
        with html.Div(v_if=("seg_statistics.length",), classes="mt-2 pa-2 swinssl-statistics",
                      style="border: 1px solid rgba(128, 128, 128, 0.4); border-radius: 4px;"):
            html.Div("Segment statistics (on the volume's grid, updated after edits)", classes="text-caption font-weight-bold")
            with html.Table(style="width: 100%; font-size: 12px;"):
                with html.Tr(v_for="row in seg_statistics", key="row.id", classes="swinssl-statistics-row",
                             style=("row.empty ? 'color: #ffb74d;' : ''",)):
                    with html.Td(style="width: 14px;"):
                        html.Span(style=("'display: inline-block; width: 10px; height: 10px; border-radius: 2px; background: ' + row.colour",))
                    html.Td("{{ row.name }}", classes="swinssl-statistics-name")
                    html.Td("{{ row.volume }}", classes="swinssl-statistics-volume", style="text-align: right;")
                    html.Td("{{ row.intensity }}", classes="swinssl-statistics-intensity", style="text-align: right;")

    def model_downloads(self) -> None:
        """The catalogue next to the installed models: a Download button per entry, with the download's progress."""
        with VCard(variant="outlined", classes="ma-2 swinssl-catalogue"):
            VCardTitle("Download models", classes="text-subtitle-2")
            with VList(density="compact"):
                with VListItem(v_for="entry in cat_entries", key="entry.name", title=("entry.title",), subtitle=("entry.detail",),
                               classes="swinssl-catalogue-entry"):
                    with html.Template(v_slot_append=True):
                        VBtn(text=("entry.installed ? 'Installed' : (entry.verified ? 'Download' : 'Download unverified')",), size="small",
                             variant="tonal", disabled=("entry.installed || !!cat_busy",), classes="swinssl-fetch-model",
                             raw_attrs=['@click.stop="trigger(\'swinssl_fetch_model\', [entry.name])"'])
                    html.Div("{{ entry.note }}", v_if=("entry.note && !entry.installed",),
                             classes="text-caption text-warning swinssl-unverified-note")
            with VCardText():
                VProgressLinear(v_if=("cat_busy",), model_value=("cat_progress",), height=6, color="primary", classes="swinssl-fetch-progress")
                html.Div("{{ cat_message }}", classes="text-caption swinssl-fetch-message")

    # --- Train page --------------------------------------------------------------------------------
    def train_page(self) -> None:
        with VCard(variant="outlined", classes="ma-2"):
            with VCardText():
                with VRadioGroup(v_model=("train_kind",), inline=True, hide_details=True, density="compact"):
                    VRadio(label="Pretrain (self-supervised)", value="pretrain", classes="swinssl-kind-pretrain")
                    VRadio(label="Fine-tune", value="finetune", classes="swinssl-kind-finetune")
        self.data_browser("use_folder", "Use", folders_only=True)
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("Training data", classes="text-subtitle-2")
            with VList(density="compact", classes="swinssl-train-data"):
                VListItem(v_if=("!train_data.length",), title="No folder chosen: 'Use' a folder above")
                with VListItem(v_for="entry in train_data", key="entry.path", title=("entry.name",)):
                    with html.Template(v_slot_append=True):
                        VSelect(v_if=("train_swinfuse",), items=("['ct', 'mr', 'pet']",), model_value=("entry.modality",),
                                update_modelValue="train_data = train_data.map(e => e.path === entry.path ? {...e, modality: $event} : e)",
                                density="compact", hide_details=True, style="width: 90px;")
                        VBtn(icon="mdi-close", size="small", variant="text", raw_attrs=['@click.stop="trigger(\'swinssl_drop_folder\', [entry.path])"'])
            VCheckbox(v_if=("train_kind === 'finetune'",), v_model=("train_use_cases",), density="compact", hide_details=True,
                      label=("'Include the training set (' + seg_cases + ' corrected case(s))'",), classes="mx-2")
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("Settings", classes="text-subtitle-2")
            with VCardText():
                with html.Div(v_if=("train_kind === 'pretrain'",)):
                    VTextField(label="Run name", v_model=("train_run_name",), density="compact", hide_details=True, classes="mb-2 swinssl-run-name")
                    VSelect(label="Intensity preset", items=("['ct', 'mr', 'pet', 'none']",), v_model=("train_preset",),
                            density="compact", hide_details=True, classes="mb-2")
                    with html.Div(style="display: flex; gap: 6px;"):
                        VTextField(label="Rotation", v_model_number=("train_weight_rotation",), type="number", density="compact",
                                   hide_details=True, classes="swinssl-weight-rotation")
                        VTextField(label="Contrastive", v_model_number=("train_weight_contrastive",), type="number", density="compact",
                                   hide_details=True, classes="swinssl-weight-contrastive")
                        VTextField(label="Inpainting", v_model_number=("train_weight_inpainting",), type="number", density="compact",
                                   hide_details=True, classes="swinssl-weight-inpainting")
                    with html.Div(style="display: flex; gap: 6px;", classes="mt-2"):
                        VTextField(label="Batch size", v_model_number=("train_batch_size",), type="number", density="compact", hide_details=True)
                        VTextField(label="Preview every", v_model_number=("train_preview_every",), type="number", density="compact",
                                   hide_details=True, classes="swinssl-preview-every")
                    VSwitch(label="CT+PET channels (volumes from swinssl align)", v_model=("train_ct_pet",), density="compact", hide_details=True)
                    VSwitch(label="SwinFUSE (modality per folder)", v_model=("train_swinfuse",), density="compact", hide_details=True)
                with html.Div(v_if=("train_kind === 'finetune'",)):
                    VTextField(label="Model name", v_model=("train_model_name",), density="compact", hide_details=True, classes="mb-2 swinssl-model-name")
                    VSelect(label="Start from", items=("train_inits",), v_model=("train_init",), density="compact", hide_details=True, classes="mb-2")
                    VTextField(label="Classes (comma-separated; empty: all segments)", v_model=("train_classes",), density="compact",
                               hide_details=True, classes="mb-2")
                with html.Div(style="display: flex; gap: 6px;", classes="mt-2"):
                    VTextField(label="ROI", v_model_number=("train_roi",), type="number", density="compact", hide_details=True, classes="swinssl-roi")
                    VTextField(label="Feature size", v_model_number=("train_feature_size",), type="number", density="compact",
                               hide_details=True, classes="swinssl-feature-size")
                    VTextField(label="Steps", v_model_number=("train_steps",), type="number", density="compact", hide_details=True,
                               classes="swinssl-steps")
                VSelect(label="Device", items=("['auto', 'cpu', 'cuda']",), v_model=("train_device",), density="compact",
                        hide_details=True, classes="mt-2")
        with VCard(variant="outlined", classes="ma-2"):
            with VCardText():
                with html.Div(v_if=("!train_running",), style="display: flex; gap: 6px;"):
                    VBtn("Start", color="primary", classes="swinssl-start",
                         click="trigger(train_kind === 'pretrain' ? 'swinssl_pretrain' : 'swinssl_finetune')")
                    VBtn("Resume", v_if=("train_can_resume",), variant="tonal", classes="swinssl-resume", click="trigger('swinssl_pretrain', [true])")
                VBtn("Stop", v_else=True, color="error", classes="swinssl-stop", click="trigger('swinssl_stop')")
                VProgressLinear(model_value=("train_total ? 100 * train_step / train_total : 0",), height=6, classes="my-2", color="primary")
                html.Div("{{ train_status }}", classes="text-caption swinssl-train-status")
                html.Div("{{ line }}", v_for="line in train_comparison", key="line", classes="text-caption swinssl-train-comparison")
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("{{ train_kind === 'finetune' ? 'Losses and validation Dice' : 'Losses' }}", classes="text-subtitle-2")
            with html.Div(classes="pa-2") as chart:
                chart.add_child(CHART_SVG)
            html.Div("{{ train_preview_step === null ? 'Previews (original / masked / reconstruction) appear in the three views as they arrive.'"
                     " : 'Views, labelled in their corner: original / masked (holes filled with noise) / reconstruction of step ' + train_preview_step }}",
                     v_if=("train_kind === 'pretrain'",), classes="text-caption px-2 pb-2 swinssl-preview-caption")
            html.Div("{{ train_preview_metrics }}", v_if=("train_kind === 'pretrain' && train_preview_metrics",),
                     classes="text-caption px-2 pb-2 swinssl-preview-metrics")
            VSelect(label="Preview views", items=("['Axial', 'Coronal', 'Sagittal']",), v_model=("train_preview_orientation",),
                    v_if=("train_kind === 'pretrain'",), density="compact", hide_details=True, classes="mx-2 mb-2 swinssl-preview-orientation")
        with VCard(variant="outlined", classes="ma-2"):
            VCardTitle("Events", classes="text-subtitle-2")
            VDataTable(headers=("swinssl_event_headers", EVENT_HEADERS), items=("train_events",), density="compact",
                       items_per_page=8, classes="swinssl-events")
