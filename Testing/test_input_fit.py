"""A model says when an input is not its kind (issue 22, section 2): the input check against what the package
declares, on real CT and MR; the refusal and its explicit override on the command line; the plausibility summary;
what a package records about its training, old packages included."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk

from conftest import phantom_ct, run_cli, write_volume
from swinssl.events import read_events
from swinssl.inference.input_fit import check_input_fit
from swinssl.inference.plausibility import flag_lines, plausibility, segment_lines
from swinssl.labels.table import LabelTable
from swinssl.package import MODEL_JSON, InputChannel, ModelPackage, TrainedOn, load_package

DEMO_MODEL = Path(__file__).resolve().parents[1] / "swinssl" / "resources" / "demo_organs"
MR = ("mr", "brain_t1c_brain1.nrrd")  # a contrast T1 brain MR of a patient: no air near -1000


def fit(package, path: Path):
    return check_input_fit([sitk.ReadImage(str(path))], [path.name], package)


def test_real_volumes_against_the_ct_demo_model(shared_data, tmp_path):
    """The abdominal CTs fit; a chest CT gets a region warning; every MR is certainly not CT; a tiny field of view
    (a wrong spacing) and slices far coarser than the training's are named; an MR model refuses a CT."""
    demo = load_package(DEMO_MODEL)
    for name in ("abdomen_ct_3mm.nii.gz", "abdomen_ct_small_3mm.nii.gz"):
        report = fit(demo, shared_data / "ct" / name)
        assert report.warnings == [] and report.mismatch is None, name
    chest = fit(demo, shared_data / "ct" / "chest_ct_lung1.nrrd")
    assert chest.mismatch is None and [w.reason for w in chest.warnings] == ["looks like a chest CT, not abdomen: lung fills 32% of the body"]
    for name in ("brain_t1c_brain1.nrrd", "brain_t1_colin27.nii.gz", "abdomen_mr_small_3mm.nii.gz"):
        report = fit(demo, shared_data / "mr" / name)
        assert report.mismatch.file == name and report.mismatch.reason.startswith("looks like MR, not CT: no air near -1000 HU"), name

    head_sized = fit(demo, write_volume(tmp_path / "small_body.nii.gz", phantom_ct(), spacing=(2.0, 2.0, 2.5)))
    assert [w.reason for w in head_sized.warnings] == ["looks like a head or a limb, not abdomen: the body is only 72 mm wide"]
    tiny = fit(demo, write_volume(tmp_path / "tiny.nii.gz", phantom_ct(), spacing=(0.01, 0.01, 0.01)))
    assert tiny.mismatch is None and any(w.reason.startswith("its field of view is only 0.4 x 0.5 x 0.4 mm") for w in tiny.warnings)
    coarse = fit(demo, write_volume(tmp_path / "coarse.nii.gz", phantom_ct((12, 48, 44)), spacing=(2.0, 2.0, 10.0)))
    assert [w.reason for w in coarse.warnings][0].startswith("its voxels are 10 mm apart, the model was trained on 3 mm at most")

    mr_model = ModelPackage("brain-mr", LabelTable.from_names(["lesion"]), [InputChannel("MR", "mr")], (1.0, 1.0, 1.0), 64, 12)
    assert fit(mr_model, shared_data / "mr" / MR[1]).mismatch is None
    assert fit(mr_model, shared_data / "ct" / "abdomen_ct_small_3mm.nii.gz").mismatch.reason.startswith("looks like CT, not MR")


def test_an_mr_into_the_ct_model_is_refused_naming_the_file_unless_allowed(shared_data, tmp_path):
    """The brain MR into the bundled abdominal CT model: exit 1, the file and the reason named, nothing written, the
    event log says why; with --allow-mismatch it is segmented, with the doubt as a warning event and the summary."""
    mr = shared_data / MR[0] / MR[1]
    output, events = tmp_path / "mr.seg.nrrd", tmp_path / "refused.jsonl"
    refused = run_cli("segment", "--model", str(DEMO_MODEL), "--input", str(mr), "--output", str(output), "--device", "cpu",
                      "--events", str(events))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"error: {mr}: looks like MR, not CT" in refused.stderr
    assert "the model 'demo-organs' was trained on abdomen CT; to segment it anyway, add --allow-mismatch" in refused.stderr
    assert not output.exists()
    error = [e for e in read_events(events) if e["event"] == "error"]
    assert [e["kind"] for e in error] == ["InputMismatchError"] and "--allow-mismatch" not in error[0]["message"]

    allowed = run_cli("segment", "--model", str(DEMO_MODEL), "--input", str(mr), "--output", str(output), "--device", "cpu",
                      "--events", str(tmp_path / "allowed.jsonl"), "--allow-mismatch", "--fast", "--overlap", "0")  # one window
    assert allowed.returncode == 0, allowed.stderr
    assert output.is_file() and "Empty, a known miss of this model: kidney_left" in allowed.stderr  # the flags under the volumes
    log = read_events(tmp_path / "allowed.jsonl")
    warnings = [e for e in log if e["event"] == "warning"]
    assert [(w["file"], w["reason"].split(":")[0]) for w in warnings] == [(str(mr), "looks like MR, not CT")]
    done = log[-1]
    assert done["event"] == "done" and [s["name"] for s in done["plausibility"]["segments"]] == list(done["volume_ml"])


def test_the_plausibility_summary_flags_empty_segments_and_confidence_far_below_validation():
    """Against the demo model's own validation confidence (liver 0.90): a liver at 0.50 is doubtful, an aorta at 0.75
    is not; the empty left kidney is the known miss, an empty spleen is not; without validation figures 0.6 is the floor."""
    demo = load_package(DEMO_MODEL)
    volumes = {"liver": 1500.0, "spleen": 0.0, "kidney_right": 150.0, "kidney_left": 0.0, "stomach": 300.0, "aorta": 40.0}
    confidence = {name: {"mean": mean, "below": 0.1} for name, mean in (("liver", 0.5), ("kidney_right", 0.8), ("stomach", 0.84), ("aorta", 0.75))}
    summary = plausibility(volumes, confidence, demo)
    assert summary["empty"] == ["spleen", "kidney_left"] and summary["known_misses"] == ["kidney_left"]
    assert summary["low_confidence"] == ["liver"] and summary["reference"] == "validation"
    assert segment_lines(summary)[0] == "liver: 1500 mL, mean confidence 0.50, 10% unsure (LOW: 0.90 on validation)"
    assert flag_lines(summary) == ["Empty (not found): spleen", "Empty, a known miss of this model: kidney_left",
                                   "Doubtful: the confidence of liver is far below its validation cases; is this input the kind the model was trained on?"]
    from swinssl.labels.anatomy import shown_name  # the faces name the lines as they name the segments (Slicer's names)

    assert segment_lines(summary, shown_name)[1].startswith("right kidney: 150 mL")
    assert "Empty, a known miss of this model: left kidney" in flag_lines(summary, shown_name)

    no_reference = plausibility(volumes, confidence, replace(demo, metrics={}))
    assert no_reference["low_confidence"] == ["liver"] and no_reference["reference"] == "threshold"
    assert plausibility(volumes, {}, demo)["reference"] is None


def test_what_a_model_was_trained_on_is_kept_and_old_packages_still_load(tmp_path):
    """trained_on round-trips through model.json; a package written before it existed loads with nothing recorded."""
    old = Path(shutil.copytree(DEMO_MODEL, tmp_path / "old"))
    meta = json.loads((old / MODEL_JSON).read_text(encoding="utf-8"))
    del meta["trained_on"]
    (old / MODEL_JSON).write_text(json.dumps(meta))
    package = load_package(old)
    assert package.trained_on == TrainedOn() and package.kind() == "CT"
    assert package.describe_training() == "Trained on CT (3 mm voxels)."

    package.trained_on = TrainedOn("head", "20 brain CTs", (0.5, 5.0), ("does not segment vessels",))
    package.write_metadata()
    again = load_package(old)
    assert again.trained_on == package.trained_on
    assert again.describe_training() == "Trained on head CT (0.5-5 mm voxels): 20 brain CTs. Known misses: does not segment vessels."
    demo = load_package(DEMO_MODEL)
    assert demo.trained_on.region == "abdomen" and "left kidney" in demo.describe_training()
