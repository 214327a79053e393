import json

import pytest

from swinssl.events import SCHEMA_VERSION, EventLog, read_events


def test_events_are_json_lines_with_kind_time_and_schema(tmp_path):
    path = tmp_path / "sub" / "events.jsonl"
    log = EventLog(path)
    log.emit("start", config={"roi": 32}, volumes=2, device="cpu")
    log.emit("progress", step=1, total=2, losses={"total": float("nan")}, path_like=tmp_path)
    log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["event"] == "start" and first["schema"] == SCHEMA_VERSION and first["volumes"] == 2
    assert isinstance(first["time"], float)
    assert second["losses"]["total"] is None  # NaN becomes null: strict JSON
    assert second["path_like"] == str(tmp_path)


def test_unknown_event_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown event kind"):
        EventLog(tmp_path / "e.jsonl").emit("finished")


def test_reader_ignores_a_partially_written_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "start", "time": 1}\n{"event": "progr')
    assert [e["event"] for e in read_events(path)] == ["start"]


def test_stdout_target(capsys):
    EventLog("-").emit("warning", file="a.nii", reason="bad")
    assert json.loads(capsys.readouterr().out)["reason"] == "bad"
