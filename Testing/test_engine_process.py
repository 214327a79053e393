"""Stop and cancel reach the engine through a launcher-shaped parent, and work without POSIX-only APIs.

Inside Slicer ``sys.executable`` is PythonSlicer, a CTKAppLauncher: it starts the real Python with
QProcess (same process group), installs no signal handler, forwards nothing, and exits with the child's
status (commontk/AppLauncher Base/ctkAppLauncher.cpp). ``write_launcher`` builds an executable with that
shape; the engine runs as its child, exactly as under Slicer.
"""

import os
import signal
import stat
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import TINY_MODEL, phantom_ct, write_volume
from swinssl.events import read_events
from swinssl.runner import CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, EngineProcess, popen_options


def write_launcher(folder: Path) -> Path:
    launcher = folder / "PythonSlicer"
    launcher.write_text(
        f"#!{sys.executable}\n"
        "# Like CTKAppLauncher: the real interpreter as a child, no signal handler, the child's exit status.\n"
        "import subprocess, sys\n"
        "sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))\n"
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    return launcher


def start_pretraining(tmp_path: Path, python: str) -> EngineProcess:
    data = write_volume(tmp_path / "data" / "ct.nii.gz", phantom_ct(), spacing=(2.0, 2.0, 2.5))
    arguments = ["pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "500", "--batch-size", "2",
                 "--projection-dim", "16", "--cache-dir", str(tmp_path / "cache"), *TINY_MODEL]
    engine = EngineProcess.start(arguments, tmp_path / "run" / "events.jsonl", python, stoppable=True)
    deadline = time.monotonic() + 180
    while not any(event["event"] == "progress" for event in engine.events):
        engine.poll()
        assert engine.running and time.monotonic() < deadline, engine.log_tail()
        time.sleep(0.1)
    return engine


@pytest.fixture
def without_posix_signals(monkeypatch):
    """What Windows lacks: os.killpg (signal.SIGKILL cannot be removed here: psutil itself uses it on
    POSIX; the runner's source is checked for it below)."""
    monkeypatch.delattr(os, "killpg")


def test_the_runner_uses_no_posix_only_process_call():
    """On Windows os.killpg, os.setsid and signal.SIGKILL do not exist; psutil's terminate/kill map to
    TerminateProcess there. The runner names none of them."""
    import ast

    import swinssl.runner

    tree = ast.parse(Path(swinssl.runner.__file__).read_text(encoding="utf-8"))
    attributes = {f"{node.value.id}.{node.attr}" for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)}
    assert not attributes & {"os.killpg", "os.setsid", "os.kill", "signal.SIGKILL", "signal.SIGTERM", "os.getpgid"}


def test_stop_reaches_the_engine_behind_a_launcher_that_a_signal_has_killed(tmp_path, without_posix_signals):
    engine = start_pretraining(tmp_path, str(write_launcher(tmp_path)))
    launcher = psutil.Process(engine.process.pid)
    python_real = launcher.children()
    assert len(python_real) == 1 and python_real[0].is_running()
    os.kill(launcher.pid, signal.SIGTERM)  # what the old killpg did to the launcher: it dies at once
    engine.process.wait(10)
    assert engine.process.returncode == -signal.SIGTERM
    assert engine.running and engine.outcome is None  # the engine behind it still runs: not "Failed"
    engine.stop()
    assert engine.wait(timeout=120) == "stopped"
    stopped = [event for event in read_events(engine.events_path) if event["event"] == "stopped"]
    assert stopped and stopped[0]["reason"] == "stop_file"  # the signal went to the launcher alone
    assert Path(stopped[0]["checkpoint"]).is_file()
    assert not python_real[0].is_running() or python_real[0].status() == psutil.STATUS_ZOMBIE  # an orphan waits for init to reap it


def test_a_stop_file_alone_stops_the_engine_through_a_live_launcher(tmp_path, without_posix_signals):
    engine = start_pretraining(tmp_path, str(write_launcher(tmp_path)))
    engine.stop()
    assert engine.wait(timeout=120) == "stopped"
    assert engine.process.returncode == 3  # the launcher forwarded the engine's "stopped" status
    stopped = [event for event in engine.events if event["event"] == "stopped"]
    assert stopped[0]["reason"] == "stop_file" and stopped[0]["step"] < 500


def test_cancel_ends_the_launcher_and_its_children_without_posix_only_calls(tmp_path, without_posix_signals):
    engine = start_pretraining(tmp_path, str(write_launcher(tmp_path)))
    tree = engine.alive_processes()
    assert len(tree) >= 2  # launcher + real interpreter (+ any helper)
    engine.cancel()
    assert not engine.running and engine.outcome == "cancelled"
    assert not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE for process in tree)


def test_popen_options_per_platform():
    assert popen_options("linux") == {"start_new_session": True}
    assert popen_options("darwin") == {"start_new_session": True}
    windows = popen_options("win32")
    assert "start_new_session" not in windows  # ignored on Windows; a new process group is a creation flag there
    assert windows["creationflags"] == CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW == 0x08000200


def test_a_run_that_dies_without_a_final_event_is_failed_not_finished(tmp_path):
    engine = EngineProcess.start(["--version"], tmp_path / "events.jsonl")
    assert engine.wait(timeout=60) == "failed"  # exit 0, but the engine never said "done"
    assert engine.exit_code == 0 and "swinssl" in engine.log_tail()
