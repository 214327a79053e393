"""The Segment page's "Download models" card: the catalogue next to the installed models, one download at a
time with its progress, through the shared :class:`swinssl_slicer.catalogue_logic.CatalogueLogic`."""

from __future__ import annotations

from typing import Callable
from urllib.parse import urlsplit

from trame_server import Server

from swinssl_slicer.catalogue_logic import CatalogueLogic, DownloadRun

from swinssl.catalogue import CatalogueEntry

UNVERIFIED_NOTE = "Unverified: no published checksum proves the file is its authors' own (its SHA-256 is recorded)."


def failure_advice(entry: CatalogueEntry, error: str) -> str:
    """What the page says when the download of ``entry`` failed with the engine's ``error``: what to do instead,
    with the file's name in place of its long address."""
    if ": could not connect (" in error:
        install = ("swinssl finetune --init FILE" if entry.format == "ssl-weights"
                   else "swinssl models import FOLDER (unzip it first)")
        return (f"{entry.name} was not downloaded: this server cannot reach {urlsplit(entry.url).hostname} (no internet here?). "
                f"Download {entry.file_name} on a computer that can, copy it to this server and use {install}.")
    return f"{entry.name} was not downloaded: {error.replace(entry.url, entry.file_name)}"


class ModelDownloads:
    """``on_installed`` is called when a download has installed a model (the page lists it)."""

    def __init__(self, server: Server, catalogue: CatalogueLogic, on_installed: Callable[[], None]) -> None:
        self.server, self.catalogue, self.on_installed = server, catalogue, on_installed
        self.run: DownloadRun | None = None
        self.entry: CatalogueEntry | None = None  # what self.run downloads
        state = server.state
        state.cat_entries, state.cat_busy, state.cat_progress, state.cat_message = [], "", 0, ""
        self.refresh()

    def refresh(self) -> None:
        self.server.state.cat_entries = [
            {"name": entry.name, "title": entry.title or entry.name, "detail": self.catalogue.describe(entry),
             "installed": self.catalogue.is_installed(entry), "verified": entry.hash_algorithm is not None,
             "note": "" if entry.hash_algorithm else UNVERIFIED_NOTE}
            for entry in self.catalogue.entries()]

    def start(self, name: str) -> None:
        """Downloads the entry ``name``. An entry without a published hash has its own button, "Download unverified":
        clicking it is the consent the command line asks for with --allow-unverified."""
        if self.run is not None:
            raise ValueError(f"{self.run.name} is downloading: wait for it to finish")
        entry = next((e for e in self.server.state.cat_entries if e["name"] == name), None)
        if entry is None:  # the page's state is the browser's to forge
            raise ValueError("choose one of the listed models")
        self.entry = next(e for e in self.catalogue.entries() if e.name == name)
        self.run = self.catalogue.start(name, allow_unverified=not entry["verified"])
        state = self.server.state
        unverified = "" if entry["verified"] else " (unverified: no published checksum to check it against)"
        state.cat_busy, state.cat_progress, state.cat_message = name, 0, f"Downloading {name}{unverified} ..."

    def poll(self) -> None:
        if self.run is None:
            return
        run, state = self.run, self.server.state
        self.catalogue.poll(run)
        state.cat_progress = round(100 * run.progress)
        status = run.status()
        if status is None:
            return
        self.run = None
        failed = run.engine.outcome not in ("done", "cancelled")
        state.cat_busy, state.cat_message = "", failure_advice(self.entry, run.error or "") if failed else status
        self.refresh()
        if run.installed is not None:
            self.on_installed()

    def close(self) -> None:
        """Ends a download; its partial file stays, so the next download of that entry resumes it."""
        if self.run is not None:
            self.catalogue.cancel(self.run)
            self.run = None
