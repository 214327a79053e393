"""The model catalogue for the faces, without Qt: entries next to installed models, and a download or import run
(``swinssl models download`` / ``swinssl models import`` as a subprocess) whose progress, outcome and errors are read
from its events. Importing loads the weights into the network (torch and MONAI, seconds to tens of seconds), so it
never runs in the face's process (Slicer's GUI thread).

Listing reads the catalogue JSON only (no torch import); downloading, verifying and installing are the engine's
(:mod:`swinssl.model_download`), so every face installs models the same way as the command line.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from swinssl_slicer.engine import engine_process, ensure_engine_on_path

ensure_engine_on_path()

from swinssl.catalogue import CatalogueEntry, load_catalogue  # noqa: E402  (reads JSON only)
from swinssl.models import models_dir  # noqa: E402


if TYPE_CHECKING:  # the engine's runner needs psutil, installed with the engine's requirements
    from swinssl.runner import EngineProcess


@dataclass
class DownloadRun:
    """One download or import (``action``): the engine process, its temporary folder and the bytes received so far."""

    name: str
    engine: EngineProcess
    folder: Path
    action: str = "download"  # or "import"
    received: int = 0
    total: int | None = None
    error: str | None = None
    installed: Path | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def progress(self) -> float:
        return self.received / self.total if self.total else 0.0

    def status(self) -> str | None:
        """None while running; else one line for the user."""
        outcome = self.engine.outcome
        if outcome is None:
            return None
        if outcome == "done":
            return f"Installed {self.name} in {self.installed}"
        if outcome == "cancelled":
            resumes = "; running it again resumes it" if self.action == "download" else ""
            return f"{self.action.capitalize()} of {self.name} cancelled{resumes}."
        return f"{self.action.capitalize()} of {self.name} failed: {self.error}"


class CatalogueLogic:
    """``catalogue``: a catalogue JSON (default: the built-in one); ``models_folder``: where models are installed."""

    def __init__(self, python: str | None = None, models_folder: Path | None = None, catalogue: Path | None = None,
                 temp_root: Path | None = None) -> None:
        self.python = python
        self.models_folder = Path(models_folder) if models_folder else models_dir()
        self.catalogue = catalogue
        self.temp_root = temp_root

    def entries(self) -> list[CatalogueEntry]:
        return load_catalogue(self.catalogue)

    def is_installed(self, entry: CatalogueEntry) -> bool:
        return entry.installed_folder(self.models_folder).exists()

    def label(self, entry: CatalogueEntry) -> str:
        """The entry's name in a list: marked when installed, and weights marked as such (no model list shows them)."""
        kind = " [weights for pretraining/fine-tuning]" if entry.format == "ssl-weights" else ""
        return f"{entry.name}{kind}{' (installed)' if self.is_installed(entry) else ''}"

    def describe(self, entry: CatalogueEntry) -> str:
        """One line for a list: title, format, whether the download is hash-checked, licence; for weights, where they are used."""
        line = f"{entry.title or entry.name} ({entry.modality or 'any'}; {entry.verification()}; licence: {entry.licence})"
        if entry.format == "ssl-weights":
            line += (f". Not a segmentation model, so it is not in the model list: pretrained weights to start pretraining or "
                     f"fine-tuning from (Initialise from: the folder {entry.installed_folder(self.models_folder)}; command line: "
                     f"swinssl finetune --init {entry.name})")
        return line

    def start(self, name: str, allow_unverified: bool = False) -> DownloadRun:
        """Starts ``swinssl models download NAME``; returns at once."""
        folder = self._new_folder("download")
        arguments = ["models", "download", name, "--models-dir", str(self.models_folder)]
        arguments += ["--catalogue", str(self.catalogue)] if self.catalogue else []
        arguments += ["--allow-unverified"] if allow_unverified else []
        return DownloadRun(name, engine_process().start(arguments, folder / "events.jsonl", self.python), folder)

    def start_import(self, source: Path, name: str | None = None) -> DownloadRun:
        """Starts ``swinssl models import SOURCE`` (a model package, MONAI bundle, fine-tuning run or checkpoint); returns
        at once. Followed with :meth:`poll` and ended with :meth:`cancel` as a download is."""
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such folder or file to import")
        folder = self._new_folder("import")
        arguments = ["models", "import", str(source), "--models-dir", str(self.models_folder)] + (["--name", name] if name else [])
        return DownloadRun(source.name, engine_process().start(arguments, folder / "events.jsonl", self.python), folder, action="import")

    def _new_folder(self, action: str) -> Path:
        """A new temporary folder for a run's event log, under ``temp_root`` when given."""
        if self.temp_root is not None:
            Path(self.temp_root).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"SwinSSL-{action}-", dir=self.temp_root))

    def poll(self, run: DownloadRun) -> list[dict]:
        events = run.engine.poll()
        for event in events:
            if event["event"] == "progress" and event.get("stage") == "download":
                run.received, run.total = event["bytes"], event.get("total_bytes")
            elif event["event"] == "progress" and event.get("message"):  # an import's stage
                run.messages.append(event["message"][:1].upper() + event["message"][1:])
            elif event["event"] == "done":
                run.installed = Path(event["outputs"]["model"])
                run.messages += [f"Licence: {event['licence']}"] if "licence" in event else []
            elif event["event"] == "error":
                run.error = event["message"]
        if not run.engine.running and run.folder.exists():  # ended: keep what the log says, then clear the files
            if run.engine.outcome not in ("done", "cancelled") and run.error is None:
                run.error = run.engine.log_tail(600) or f"the engine ended without reporting (exit {run.engine.exit_code})"
            shutil.rmtree(run.folder, ignore_errors=True)
        return events

    def cancel(self, run: DownloadRun) -> None:
        """Ends the download; the partial file stays, so starting it again resumes it."""
        run.engine.cancel()
        shutil.rmtree(run.folder, ignore_errors=True)
