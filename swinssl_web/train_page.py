"""The Train page's logic: pretraining and fine-tuning runs over server-side folders through
:class:`swinssl_slicer.training_logic.TrainingLogic` (the Slicer Pretrain module's logic), with the loss
chart, the previews in three slice views, Stop / Resume and the run's events as a table.

State keys start with ``train_``. Runs are written under the server's runs folder, models under its
models folder; data folders must lie inside the ``--data`` roots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from trame_server import Server
from trame_slicer.core import SlicerApp, VolumeWindowLevel
from trame_slicer.views import ViewProps

from swinssl_slicer.training_logic import (DEFAULT_TUNING_STEPS, PREVIEW_KINDS, TrainingLogic, TrainingRun, count_cases, safe_name,
                                           tuning_plan)

from swinssl.package import ModelPackage
from swinssl.preview_text import PANEL_LABELS, metrics_text
from swinssl_web.data_roots import DataRoots
from swinssl_web.loss_chart import EMPTY_CHART, chart_from_table

PREVIEW_VIEW_GROUP = 1
PREVIEW_VIEWS = {"original": "Original", "masked": "Masked", "reconstruction": "Reconstruction"}  # kind -> view tag
EVENT_ROWS = 200


PRESETS, MODALITIES, DEVICES = ("ct", "mr", "pet", "none"), ("ct", "mr", "pet"), ("auto", "cpu", "cuda")


def one_of(value: str, allowed, what: str) -> str:
    """``value`` when it is allowed: the page's state is the browser's to change, and reaches a command line."""
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of the choices offered")
    return value


def safe_class_name(name: str) -> str:
    if name.startswith("-"):
        raise ValueError(f"class {name!r}: a class name cannot start with '-'")
    return name


def folder_name(name: str, what: str) -> str:
    if not name.strip():
        raise ValueError(f"give the {what} a name")
    return safe_name(name)


def event_row(event: dict) -> dict:
    """One line of the events table: step, event name and a short description."""
    kind, detail = event["event"], ""
    if kind == "progress":
        detail = ", ".join(f"{name} {value:.4g}" for name, value in (event.get("losses") or {}).items())
        if event.get("val_mean_dice") is not None:
            detail += f", validation Dice {event['val_mean_dice']:.3f}"
    elif kind == "preview":
        detail = metrics_text(event) or "original / masked / reconstruction written"
    elif kind in ("warning", "stopped", "error"):
        detail = str(event.get("reason") or event.get("message") or "")
    elif kind == "start":
        detail = f"{(event.get('config') or {}).get('steps')} steps from step {event.get('start_step', 0)}"
    elif kind == "done":
        detail = "finished"
    return {"step": event.get("step", ""), "event": kind, "detail": detail[:200]}


class TrainPage:
    """The Train page of one app: its form (``train_*`` state), the run it started and what that run shows."""

    def __init__(self, server: Server, slicer_app: SlicerApp, training: TrainingLogic, data_roots: DataRoots, runs_folder: Path,
                 cases_folder: Path, models: Callable[[], list[ModelPackage]]) -> None:
        self.server, self.slicer_app, self.training = server, slicer_app, training
        self.data_roots, self.runs_folder, self.cases_folder, self.models = data_roots, runs_folder, cases_folder, models
        self.run: TrainingRun | None = None
        state = server.state
        state.train_kind, state.train_data, state.train_run_name = "pretrain", [], "my-pretraining"
        state.train_preset, state.train_roi, state.train_feature_size = "ct", 96, 48
        state.train_steps, state.train_batch_size, state.train_preview_every, state.train_device = 1000, 2, 100, "auto"
        state.train_weight_rotation, state.train_weight_contrastive, state.train_weight_inpainting = 1.0, 1.0, 1.0
        state.train_ct_pet, state.train_swinfuse = False, False
        state.train_init, state.train_inits, state.train_classes, state.train_model_name = "random", [], "", "my-model"
        state.train_use_cases, state.train_comparison = True, []
        state.seg_tune_steps = DEFAULT_TUNING_STEPS  # the Segment page's "Fine-tune" steps: its own, not the Train page's train_steps
        state.train_running, state.train_can_resume, state.train_step, state.train_total = False, False, 0, 0
        state.train_status, state.train_chart, state.train_events, state.train_preview_step = "", dict(EMPTY_CHART), [], None
        state.train_preview_metrics = ""
        self.view_labels: dict = {}  # view tag -> its vtkCornerAnnotation
        self.preview_window: list | None = None  # [low, high, name]: the run's preview window in the crops' 0..1 units
        state.train_preview_orientation = "Axial"  # of the preview views: orient_previews
        self.refresh_inits()

    # --- choices -----------------------------------------------------------------------------------
    def refresh_inits(self) -> None:
        """Initial weights a fine-tune may start from: random, installed models, pretraining runs."""
        choices = [{"title": "Random weights", "value": "random"}]
        choices += [{"title": f"Model: {p.name}", "value": str(p.path)} for p in self.models()]
        if self.runs_folder.is_dir():
            choices += [{"title": f"Pretraining: {run.name}", "value": str(run)}
                        for run in sorted(self.runs_folder.iterdir()) if (run / "checkpoint.pt").is_file()]
        self.server.state.train_inits = choices

    def on_init_changed(self, init: str) -> None:
        """A model package chosen as the start fills the form with its ROI and feature size: fine-tuning inherits
        them, and a feature size other than the model's is refused."""
        package = next((p for p in self.models() if str(p.path) == init), None)
        if package is not None:
            self.server.state.train_roi, self.server.state.train_feature_size = package.roi, package.feature_size

    def add_data_folder(self, path: str) -> None:
        real = str(self.data_roots.resolve(path))
        if not Path(real).is_dir():
            raise ValueError(f"{Path(real).name}: training data must be a folder")
        data = [entry for entry in self.server.state.train_data if entry["path"] != real]
        self.server.state.train_data = data + [{"path": real, "name": Path(real).name, "modality": "ct"}]

    def remove_data_folder(self, path: str) -> None:
        self.server.state.train_data = [entry for entry in self.server.state.train_data if entry["path"] != path]

    # --- starting ----------------------------------------------------------------------------------
    def run_folder(self) -> Path:
        return self.runs_folder / folder_name(self.server.state.train_run_name, "run")

    def data_folders(self) -> list[str]:
        """The chosen folders, checked again now: inside the roots, and holding no link that leads outside them."""
        folders = [self.data_roots.resolve(entry["path"]) for entry in self.server.state.train_data]
        for folder in folders:
            self.data_roots.check_tree(folder)
        return [str(folder) for folder in folders]

    def start_pretraining(self, resume: bool = False) -> None:
        state = self.server.state
        self.require_idle()
        folders = self.data_folders()
        out = self.run_folder()
        if not resume and self.training.holds_run(out, "pretrain"):  # never replaced from a page that cannot ask
            raise ValueError(f"a pretraining run named {out.name!r} exists: give another run name (nothing was replaced)")
        extra = []
        if not resume:
            if state.train_ct_pet:
                extra += ["--in-channels", "2", "--channel-presets", "ct", "pet"]
            if state.train_swinfuse:
                extra += ["--swinfuse", "--modality", *[one_of(entry["modality"], MODALITIES, "modality") for entry in state.train_data]]
        weights = (float(state.train_weight_rotation), float(state.train_weight_contrastive), float(state.train_weight_inpainting))
        self.run = self.training.start_pretraining(
            folders, out, one_of(state.train_preset, PRESETS, "preset"), int(state.train_roi), int(state.train_feature_size),
            int(state.train_steps), int(state.train_batch_size), weights, int(state.train_preview_every),
            one_of(state.train_device, DEVICES, "device"), resume=resume, extra=extra)
        self.started(f"{'Resuming' if resume else 'Starting'} pretraining in {out.name} ...", int(state.train_steps), new_run=not resume)

    def start_finetuning(self) -> None:
        """Fine-tunes into the models folder from the chosen folders and, when ticked, the training set; a model or run
        of the same name is refused (start_finetuning_from_scene without overwrite), never replaced."""
        state = self.server.state
        self.require_idle()
        sources = self.data_folders()
        if state.train_use_cases and count_cases(self.cases_folder):
            sources.append(str(self.cases_folder))
        name = folder_name(state.train_model_name, "model")
        classes = [safe_class_name(c.strip()) for c in state.train_classes.split(",") if c.strip()] or None
        init = one_of(state.train_init, [choice["value"] for choice in state.train_inits], "initial weights")
        self.run = self.training.start_finetuning_from_scene(
            name, [], sources, init, classes, int(state.train_roi), int(state.train_feature_size), int(state.train_steps),
            one_of(state.train_device, DEVICES, "device"))
        self.started(f"Fine-tuning model {name} ...", int(state.train_steps))

    def finetune_from_model(self, model: str) -> None:
        """The Segment page's "Fine-tune": the current model on the training set into a new version beside it
        (``<model>-tuned-<n>``), with the model's input settings, scored against it on the same cases."""
        self.require_idle()
        if not count_cases(self.cases_folder):
            raise ValueError("the training set is empty: correct a segmentation and click 'Add to training set' first")
        state = self.server.state
        plan = tuning_plan(model, self.training.taken_names())
        steps = int(state.seg_tune_steps)
        self.run = self.training.start_tuning(model, self.cases_folder, steps, one_of(state.train_device, DEVICES, "device"))
        state.train_kind, state.train_use_cases, state.train_data = "finetune", True, []  # the Train page shows the settings the run uses
        state.train_model_name, state.train_init, state.train_classes = self.run.out.name, plan.init, ", ".join(plan.classes)
        state.train_roi, state.train_feature_size = plan.roi, plan.feature_size  # train_steps stays the Train page's own
        if plan.init not in [choice["value"] for choice in state.train_inits]:
            state.train_inits = state.train_inits + [{"title": f"Model: {plan.parent}", "value": plan.init}]
        self.started(f"Fine-tuning {plan.parent} into {self.run.out.name} (spacing {' x '.join(f'{v:g}' for v in plan.spacing)} mm, "
                     f"as {plan.parent}) ...", steps)

    def require_idle(self) -> None:
        if self.run is not None and self.run.engine.running:
            raise ValueError("a run is in progress: stop it first")

    def started(self, message: str, steps: int, new_run: bool = True) -> None:
        """A run of ``steps`` steps started; ``new_run`` (not a resumed one): the events table shows only its events."""
        state = self.server.state
        state.train_running, state.train_can_resume, state.train_status, state.train_comparison = True, False, message, []
        state.train_step, state.train_total, state.train_chart, state.train_preview_step = 0, steps, dict(EMPTY_CHART), None
        state.train_preview_metrics = ""
        if new_run:
            state.train_events = []

    def stop(self) -> None:
        if self.run is not None:
            self.training.stop(self.run)
            self.server.state.train_status = "Stopping after this step (a checkpoint is written) ..."

    # --- following ---------------------------------------------------------------------------------
    def poll(self) -> None:
        if self.run is None:
            return
        run, state = self.run, self.server.state
        events = self.training.poll(run)
        if events:
            rows = [event_row(event) for event in reversed(events)
                    if event.get("stage") != "validation" and event["event"] != "cache"]  # those show in the status
            state.train_events = (rows + list(state.train_events))[:EVENT_ROWS]
            previews = [event for event in events if event["event"] == "preview"]
            if previews:
                state.train_preview_metrics = metrics_text(previews[-1])
                self.preview_window = previews[-1].get("window")
        if events and (run.total or run.preparing):
            state.train_step, state.train_total = run.step, run.total
            state.train_status = f"{'Pretraining' if run.kind == 'pretrain' else 'Fine-tuning'}: {run.progress_text()}"
        if events and run.table_node_id:  # the table changes only with new events
            table = self.slicer_app.scene.GetNodeByID(run.table_node_id)
            state.train_chart = chart_from_table(table.GetTable()) if table else dict(EMPTY_CHART)
        if run.preview_step is not None and run.preview_step != state.train_preview_step:
            self.show_previews(run.preview_step)
        outcome = run.status()
        if outcome is not None:
            state.train_running = False
            state.train_status, state.train_comparison = outcome, run.comparison_lines()[1:]  # the verdict is in the status
            state.train_can_resume = run.kind == "pretrain" and run.engine.outcome == "stopped"
            self.refresh_inits()
            self.run = None

    def show_previews(self, step: int) -> None:
        """Each preview volume in its own view (group 1; axial, coronal or sagittal as chosen), centred on it, in the
        run's preview window (a CT's: soft tissue -160..240 HU, as the engine's PNG) and labelled in the view's corner:
        original / masked (holes filled with noise) / reconstruction."""
        nodes = self.training.preview_nodes()
        views = self.slicer_app.view_manager
        for kind in PREVIEW_KINDS:
            view = views.get_view(PREVIEW_VIEWS[kind])
            if view is not None and kind in nodes:
                if self.preview_window:
                    VolumeWindowLevel.set_volume_node_display_min_max_range(nodes[kind], *self.preview_window[:2])
                view.set_background_volume_id(nodes[kind].GetID())
                self._label(view, PREVIEW_VIEWS[kind], f"{PANEL_LABELS[kind]}, step {step}")
                view.reset_view()
        self.server.state.train_preview_step = step if len(nodes) == len(PREVIEW_KINDS) else None

    def orient_previews(self, orientation: str) -> None:
        """The preview views in ``orientation`` (Axial, Coronal or Sagittal), refitted to their crops."""
        if orientation not in ("Axial", "Coronal", "Sagittal"):
            raise ValueError(f"orientation {orientation!r} is not one of Axial, Coronal, Sagittal")
        for tag in PREVIEW_VIEWS.values():
            view = self.slicer_app.view_manager.get_view(tag)
            if view is not None:
                view.set_view_properties(ViewProps(orientation=orientation, label=tag, group=PREVIEW_VIEW_GROUP))
                view.reset_view()

    def _label(self, view, tag: str, text: str) -> None:
        """Writes ``text`` in the upper-left corner of ``view`` (drawn into the streamed image, like Slicer's own annotations)."""
        from vtkmodules.vtkRenderingAnnotation import vtkCornerAnnotation

        if tag not in self.view_labels:
            label = vtkCornerAnnotation()
            label.SetMaximumFontSize(16)
            label.GetTextProperty().SetColor(1.0, 0.83, 0.0)
            label.GetTextProperty().ShadowOn()
            view.renderer().AddViewProp(label)
            self.view_labels[tag] = label
        self.view_labels[tag].SetText(vtkCornerAnnotation.UpperLeft, text)
        view.schedule_render()
