"""The web pages never replace the user's work without asking, and say what Cancel left behind (issue 25, items 3, 4 and 11
in the web app): the Train and Segment pages' logic on a real MRML scene, real folders and a real engine process; the
pages are built without their views (no SlicerApp: these actions never touch one) and no server is started."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from web_harness import require_browser


@pytest.fixture
def server():
    require_browser()  # trame
    from trame.app import get_server

    return get_server(f"refusals-{time.monotonic_ns()}")


def test_the_train_page_refuses_a_run_or_model_name_in_use_and_replaces_nothing(mrml_scene, server, tmp_path, monkeypatch):
    """A pretraining run, a stopped fine-tuning run or an installed model of the same name was replaced silently (the page
    cannot ask): now the start is refused with the name, before any engine starts, and every file is as it was."""
    from swinssl_slicer.training_logic import TrainingLogic
    from swinssl_web.data_roots import DataRoots
    from swinssl_web.train_page import TrainPage

    monkeypatch.setenv("SWINSSL_MODELS", str(tmp_path / "models"))
    data, runs, cases = tmp_path / "data", tmp_path / "runs", tmp_path / "cases"
    for folder in (data, cases):
        folder.mkdir()
    (cases / "case.seg.nrrd").write_bytes(b"")  # one corrected case: the page includes the training set
    training = TrainingLogic(mrml_scene, temp_root=tmp_path / "temp", runs_root=runs)
    page = TrainPage(server, None, training, DataRoots([data]), runs, cases, lambda: [])
    state = server.state

    kept = {runs / "my-pretraining" / "checkpoint.pt": b"weeks of pretraining", tmp_path / "models" / "organs" / "model.json": b"{}",
            runs / "liver" / "training" / "checkpoint.pt": b"a stopped fine-tuning"}
    for path, content in kept.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"a pretraining run named 'my-pretraining' exists: give another run name \(nothing was replaced\)"):
        page.start_pretraining()
    state.train_kind = "finetune"
    for name, held in (("organs", "an installed model"), ("liver", "a fine-tuning run")):
        state.train_model_name = name
        with pytest.raises(ValueError, match=rf"^{held} named '{name}' exists: choose another model name \(nothing was replaced\)$"):
            page.start_finetuning()
    assert page.run is None and all(path.read_bytes() == content for path, content in kept.items())
    assert not (tmp_path / "temp").exists() or not any((tmp_path / "temp").iterdir())  # no case exported, no event log


def test_cancel_says_which_engine_process_outlived_its_kill(mrml_scene, server, tmp_path, monkeypatch):
    """Cancel returns within its bound when a process is stuck (here terminate and kill reach no process, as for a hung GPU
    driver call); the page said only "Cancelled" and hid the process left running. It names it now."""
    import psutil

    from swinssl.runner import EngineProcess
    from swinssl_slicer.segment_logic import SegmentationLogic, SegmentRun
    from swinssl_slicer.training_logic import TrainingLogic
    from swinssl_web.segment_page import SegmentPage

    segmentation = SegmentationLogic(mrml_scene, models_folder=tmp_path / "models")
    page = SegmentPage(server, None, segmentation, TrainingLogic(mrml_scene), tmp_path / "cases")
    folder = tmp_path / "run"
    folder.mkdir()
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run = SegmentRun(EngineProcess(process, folder / "events.jsonl", folder / "events.log", None), folder, folder / "out.seg.nrrd", [], "out")
        segmentation.active.append(run)
        page.run = run
        monkeypatch.setattr(psutil.Process, "terminate", lambda self: None)
        monkeypatch.setattr(psutil.Process, "kill", lambda self: None)
        monkeypatch.setattr(EngineProcess.cancel, "__defaults__", (0.2,))  # the grace period: 3 s in use, shortened here
        page.cancel()
        message = server.state.seg_message
        assert message.startswith("Cancelled; the case is as it was. Engine process ") and str(process.pid) in message
        assert "task manager" in message and page.run is None and not server.state.seg_running
    finally:
        process.kill()
        process.wait()
        segmentation.close()
