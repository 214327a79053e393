"""Fine-tuning: finding labelled cases in every supported layout, validating them, training, resuming,
and the issue's end-to-end run (real abdomen CT -> model package -> segmentation of a DICOM series)."""

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
import torch

from conftest import phantom_ct, run_cli, write_volume
from swinssl.events import read_events
from swinssl.finetune.cases import cases_from_datalist, cases_from_folder, cases_from_scene
from swinssl.finetune.config import FinetuneConfig
from swinssl.finetune.dataset import build_label_table, prepare_case, read_case_labels
from swinssl.io.archive import ArchiveError, safe_extract
from swinssl.finetune.train import run_finetune
from swinssl.io.reader import VolumeError
from swinssl.labels.segmentation_file import write_label_map
from swinssl.labels.table import LabelTable
from swinssl.package import load_package
from swinssl.preprocessing.intensity import IntensitySettings
from swinssl.training.checkpoint import load_checkpoint
from swinssl.training.signals import EXIT_OK, EXIT_STOPPED

SHAPE = (36, 40, 44)  # (K, J, I)


def phantom_labels(shape=SHAPE) -> np.ndarray:
    """Two 'organs' inside the phantom body: 1 on the left half, 2 a block on the right."""
    labels = np.zeros(shape, np.uint8)
    labels[10:26, 12:28, 8:20] = 1
    labels[12:24, 14:26, 26:36] = 2
    return labels


def write_case(folder: Path, name: str, seed: int = 0, label_suffix="_label", spacing=(2.0, 2.0, 2.0), labels=None) -> tuple[Path, Path]:
    image = write_volume(folder / f"{name}.nii.gz", phantom_ct(SHAPE, seed), spacing=spacing)
    label = write_volume(folder / f"{name}{label_suffix}.nii.gz", phantom_labels() if labels is None else labels, spacing=spacing)
    return image, label


def test_msd_layout_with_dataset_json(tmp_path):
    for name in ("case_1", "case_2"):
        image, label = write_case(tmp_path / "tmp", name)
        (tmp_path / "imagesTr").mkdir(exist_ok=True)
        (tmp_path / "labelsTr").mkdir(exist_ok=True)
        os.replace(image, tmp_path / "imagesTr" / f"{name}.nii.gz")
        os.replace(label, tmp_path / "labelsTr" / f"{name}.nii.gz")
    dataset = {"labels": {"0": "background", "1": "liver", "2": "spleen"},
               "training": [{"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"} for i in (1, 2)]}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    cases = cases_from_folder(tmp_path)
    assert [c.label.name for c in cases] == ["case_1.nii.gz", "case_2.nii.gz"]
    assert cases[0].names == {1: "liver", 2: "spleen"}


def test_nnunet_style_label_mapping_and_datalist_validation_split(tmp_path):
    write_case(tmp_path, "a")
    write_case(tmp_path, "b", seed=1)
    datalist = {"labels": {"background": 0, "liver": 1, "spleen": 2},
                "training": [{"image": "a.nii.gz", "label": "a_label.nii.gz"}],
                "validation": [{"image": "b.nii.gz", "label": "b_label.nii.gz"}]}
    (tmp_path / "list.json").write_text(json.dumps(datalist))
    cases = cases_from_datalist(tmp_path / "list.json")
    assert [(c.split, c.names) for c in cases] == [("training", {1: "liver", 2: "spleen"}), ("validation", {1: "liver", 2: "spleen"})]


def test_side_by_side_pairs_including_a_real_dicom_series(tmp_path, shared_data):
    os.symlink(shared_data / "ct" / "abdomen_ct_dicom_series", tmp_path / "patient7")
    os.symlink(shared_data / "ct" / "abdomen_ct_dicom_series_labels.nii.gz", tmp_path / "patient7_labels.nii.gz")
    os.symlink(shared_data / "ct" / "totalsegmentator_label_names.json", tmp_path / "names.json")
    write_case(tmp_path, "phantom", label_suffix="_seg")
    cases = {c.name: c for c in cases_from_folder(tmp_path)}
    assert set(cases) == {"patient7_labels", "phantom_seg"}
    assert cases["patient7_labels"].image.is_dicom and cases["patient7_labels"].names[5] == "liver"
    table = build_label_table([read_case_labels(cases["patient7_labels"])], ["Liver", "SPLEEN"])
    prepared = prepare_case(cases["patient7_labels"], read_case_labels(cases["patient7_labels"]), table, IntensitySettings(), (3.0, 3.0, 3.0), 64)
    assert table.names == ["liver", "spleen"] and set(np.unique(prepared.label)) <= {0, 1, 2} and (prepared.label == 1).any()


def write_mrb(path: Path, volume: Path, segmentation: Path) -> Path:
    mrml = f"""<MRML version="Slicer4.4.0">
 <Volume id="vtkMRMLScalarVolumeNode1" name="CT" references="display:vtkMRMLScalarVolumeDisplayNode1;storage:vtkMRMLVolumeArchetypeStorageNode1;"></Volume>
 <VolumeArchetypeStorage id="vtkMRMLVolumeArchetypeStorageNode1" name="VolumeArchetypeStorage" fileName="Data/{volume.name}"></VolumeArchetypeStorage>
 <Segmentation id="vtkMRMLSegmentationNode1" name="Organs" references="referenceImageGeometryRef:vtkMRMLScalarVolumeNode1;storage:vtkMRMLSegmentationStorageNode1;"></Segmentation>
 <SegmentationStorage id="vtkMRMLSegmentationStorageNode1" name="SegmentationStorage" fileName="Data/{segmentation.name}"></SegmentationStorage>
</MRML>"""
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr("Scene/Scene.mrml", mrml)
        bundle.write(volume, f"Scene/Data/{volume.name}")
        bundle.write(segmentation, f"Scene/Data/{segmentation.name}")
    return path


def test_seg_nrrd_and_mrb_scenes_match_segments_by_name_and_keep_missing_classes_out_of_background(tmp_path):
    image, label = write_case(tmp_path / "a", "a")
    case_a = cases_from_folder(tmp_path / "a")[0]
    object.__setattr__(case_a, "names", {1: "liver", 2: "spleen"})
    # Case b: a .seg.nrrd next to its volume, segment named 'Liver' only.
    b_image = write_volume(tmp_path / "b" / "b.nrrd", phantom_ct(SHAPE, 2), spacing=(2.0, 2.0, 2.0))
    liver_only = sitk.ReadImage(str(label)) == 1
    write_label_map(sitk.Cast(liver_only, sitk.sitkUInt8), LabelTable.from_names(["Liver"]), tmp_path / "b" / "b.seg.nrrd")
    case_b = cases_from_scene(tmp_path / "b" / "b.seg.nrrd", tmp_path)[0]
    # Case c: the same pair inside a Slicer scene bundle.
    mrb = write_mrb(tmp_path / "scene.mrb", b_image, tmp_path / "b" / "b.seg.nrrd")
    case_c = cases_from_scene(mrb, tmp_path)[0]
    assert case_c.label.name == "b.seg.nrrd" and case_c.image.path.name == "b.nrrd"

    labels = [read_case_labels(c) for c in (case_a, case_b, case_c)]
    table = build_label_table(labels)
    assert table.names == ["liver", "spleen"]
    prepared = [prepare_case(c, l, table, IntensitySettings(), (4.0, 4.0, 4.0), 64) for c, l in zip((case_a, case_b, case_c), labels)]
    assert prepared[0].present.tolist() == [True, True, True]
    assert prepared[1].present.tolist() == [True, True, False]  # spleen not annotated: excluded, not background
    assert prepared[1].image.shape[1:] == prepared[1].label.shape and prepared[1].image.dtype == np.float16


def test_archive_members_escaping_the_target_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.mrb", "w") as bundle:
        bundle.writestr("../outside.txt", "x")
    with pytest.raises(ArchiveError, match="outside the extraction folder"):
        safe_extract(tmp_path / "evil.mrb", tmp_path / "target")
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize(
    "problem, make_label, message",
    [
        ("size", lambda: np.zeros((30, 40, 44), np.uint8), "differs from image size"),
        ("values", lambda: np.where(phantom_labels() == 2, 7, phantom_labels()).astype(np.uint8), "label values [7] are not in its label table"),
        ("empty", lambda: np.zeros(SHAPE, np.uint8), "no voxel of the model's classes"),
    ],
)
def test_bad_labels_are_errors_naming_the_file(tmp_path, problem, make_label, message):
    image, label = write_case(tmp_path, "case", labels=make_label())
    case = cases_from_folder(tmp_path)[0]
    object.__setattr__(case, "names", {1: "liver", 2: "spleen"})
    labels = read_case_labels(case)
    with pytest.raises(VolumeError) as error:
        prepare_case(case, labels, LabelTable.from_names(["liver", "spleen"]), IntensitySettings(), (4.0, 4.0, 4.0), 64)
    assert str(label) in str(error.value) and message in str(error.value)


def test_shifted_label_grid_is_refused(tmp_path):
    write_volume(tmp_path / "case.nii.gz", phantom_ct(SHAPE), spacing=(2.0, 2.0, 2.0))
    write_volume(tmp_path / "case_label.nii.gz", phantom_labels(), spacing=(2.0, 2.0, 2.0), origin=(10.0, 0.0, 0.0))
    case = cases_from_folder(tmp_path)[0]
    with pytest.raises(VolumeError, match="mm away from the image grid"):
        prepare_case(case, read_case_labels(case), LabelTable.from_names(["label_1", "label_2"]), IntensitySettings(), (4.0, 4.0, 4.0), 64)


def tiny_finetune(data: Path, out: Path, **changes) -> FinetuneConfig:
    settings = dict(out=str(out), data=[str(data)], classes=["liver", "spleen"], spacing=(4.0, 4.0, 4.0), roi=64, feature_size=12,
                    steps=4, val_every=4, checkpoint_every=100, lr=1e-3, warmup_steps=1, device="cpu", events=str(out.parent / f"{out.name}.jsonl"))
    settings.update(changes)
    return FinetuneConfig(**settings)


def labelled_phantoms(folder: Path) -> Path:
    for seed in range(3):
        write_case(folder, f"case_{seed}", seed=seed)
    (folder / "labels.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))
    return folder


def test_four_steps_equal_two_plus_resume_plus_two(tmp_path):
    data = labelled_phantoms(tmp_path / "data")
    assert run_finetune(tiny_finetune(data, tmp_path / "straight")) == EXIT_OK
    assert run_finetune(tiny_finetune(data, tmp_path / "split", stop_at=2)) == EXIT_STOPPED
    assert run_finetune(tiny_finetune(data, tmp_path / "split"), resume=True) == EXIT_OK
    straight = load_checkpoint(tmp_path / "straight" / "training" / "checkpoint.pt")
    split = load_checkpoint(tmp_path / "split" / "training" / "checkpoint.pt")
    for key, value in straight["model"].items():
        assert torch.equal(value, split["model"][key]), key
    log = read_events(tmp_path / "straight.jsonl")
    start = next(e for e in log if e["event"] == "start")
    assert start["labels"] == ["liver", "spleen"] and start["cases"] == 2 and start["validation_cases"] == 1
    validation = [e for e in log if e["event"] == "progress" and "val_dice" in e]
    assert len(validation) == 1 and set(validation[0]["val_dice"]) <= {"liver", "spleen"} and validation[0]["val_dice"]
    package = load_package(tmp_path / "straight")
    assert package.labels.names == ["liver", "spleen"] and package.metrics["validated_on"] == "held-out cases"
    assert package.training["case_names"] == ["case_0_label", "case_1_label", "case_2_label"]


def test_ct_window_defaults_to_btcv_for_new_runs_and_a_resumed_older_run_keeps_its_own(tmp_path):
    data = labelled_phantoms(tmp_path / "data")
    assert FinetuneConfig(data=[str(data)]).window == (-175.0, 250.0)
    assert FinetuneConfig(data=[str(data)], preset="mr").window is None
    assert run_finetune(tiny_finetune(data, tmp_path / "old", stop_at=1)) == EXIT_STOPPED
    saved = tmp_path / "old" / "training" / "config.json"
    settings = json.loads(saved.read_text(encoding="utf-8"))
    assert settings["window"] == [-175.0, 250.0]
    saved.write_text(json.dumps({**settings, "window": None}))  # as written before the default changed
    result = run_cli("finetune", "--out", str(tmp_path / "old"), "--resume")
    assert result.returncode == 0, result.stderr
    assert load_package(tmp_path / "old").channels[0].window == (-1000.0, 1000.0)


def test_finetune_from_our_pretraining_reports_the_load(tmp_path):
    from swinssl.training.config import PretrainConfig
    from swinssl.training.pretrain import run_pretraining

    data = labelled_phantoms(tmp_path / "data")
    run_pretraining(PretrainConfig(data=[str(data / "case_0.nii.gz")], out=str(tmp_path / "ssl"), cache_dir=str(tmp_path / "cache"),
                                   roi=64, feature_size=12, projection_dim=16, batch_size=1, steps=1, device="cpu"))
    config = tiny_finetune(data, tmp_path / "model", init=str(tmp_path / "ssl"), steps=1, val_every=1)
    assert run_finetune(config) == EXIT_OK
    start = next(e for e in read_events(tmp_path / "model.jsonl") if e["event"] == "start")
    assert "encoder.safetensors (swinunetr)" in start["init"] and "encoder 1" in start["init"]
    wrong = tiny_finetune(data, tmp_path / "wide", init=str(tmp_path / "ssl"), feature_size=24, steps=1)
    with pytest.raises(ValueError, match="no usable encoder weights"):
        run_finetune(wrong)


def test_issue_must_show_finetune_on_real_ct_then_segment_the_dicom_series(tmp_path, shared_data):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("abdomen_ct_3mm.nii.gz", "abdomen_ct_3mm_labels.nii.gz", "totalsegmentator_label_names.json"):
        os.symlink(shared_data / "ct" / name, data / name)
    organs = ["liver", "spleen", "kidney_right", "kidney_left", "stomach"]
    result = run_cli("finetune", "--data", str(data), "--out", str(tmp_path / "organs"), "--classes", *organs, "--spacing", "3", "3", "3",
                     "--roi", "64", "--feature-size", "12", "--steps", "3", "--val-every", "3", "--lr", "1e-3", "--device", "cpu",
                     "--events", str(tmp_path / "ft.jsonl"))
    assert result.returncode == 0, result.stderr
    events = read_events(tmp_path / "ft.jsonl")
    validating = [e for e in events if e["event"] == "progress" and e.get("stage") == "validation"]
    assert validating and validating[-1]["window"] == validating[-1]["windows"] and all(e["step"] == 3 for e in validating)
    done = events[-1]
    assert done["event"] == "done" and 0 < done["validation_share"] < 1 and done["validation_s"] > 0
    package = load_package(tmp_path / "organs")
    assert package.labels.names == organs and package.channels[0].modality == "CT"
    assert package.channels[0].window == (-175.0, 250.0)  # the BTCV reference's a_min/a_max, recorded for segmentation
    series = shared_data / "ct" / "abdomen_ct_dicom_series"
    output = tmp_path / "patient.seg.nrrd"
    result = run_cli("segment", "--model", str(tmp_path / "organs"), "--input", str(series), "--output", str(output), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)))
    source, written = reader.Execute(), sitk.ReadImage(str(output))
    assert written.GetSize() == source.GetSize()
    assert np.allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-4) and np.allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-3)
    assert np.allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    assert [s["name"] for s in slicerio.read_segmentation(str(output))["segments"]] == organs


def test_compare_init_writes_the_label_efficiency_table_with_out_of_distribution_dice(tmp_path, shared_data):
    from swinssl.finetune.compare import compare_init
    from swinssl.training.config import PretrainConfig
    from swinssl.training.pretrain import run_pretraining

    data = labelled_phantoms(tmp_path / "data")
    run_pretraining(PretrainConfig(data=[str(data)], out=str(tmp_path / "ssl"), cache_dir=str(tmp_path / "cache"), roi=64, feature_size=12,
                                   projection_dim=16, batch_size=1, steps=1, device="cpu"))
    mr = tmp_path / "mr"  # out-of-distribution cases: the real abdominal MR with its (pseudo-)labels
    mr.mkdir()
    for name in ("abdomen_mr_small_3mm.nii.gz", "abdomen_mr_small_3mm_labels.nii.gz", "totalsegmentator_mr_label_names.json"):
        shutil.copy(shared_data / "mr" / name, mr / name)
    rows = compare_init(tiny_finetune(data, tmp_path / "unused", steps=1, val_every=1), str(tmp_path / "ssl"), [1, 2], tmp_path / "study",
                        ood_folders=[str(mr)], ood_preset="mr")
    assert [r["n"] for r in rows] == [1, 2]
    assert all(r["difference"] == pytest.approx(r["pretrained_dice"] - r["scratch_dice"]) for r in rows)
    assert all(r["ood_cases"] == 1 and 0 <= r["scratch_ood_dice"] <= 1 and 0 <= r["pretrained_ood_dice"] <= 1 for r in rows)
    table = (tmp_path / "study" / "compare_init.md").read_text(encoding="utf-8")
    assert table.startswith("| N labelled | scratch Dice | pretrained Dice | difference | scratch OOD Dice | pretrained OOD Dice |")
    assert table.count("\n") == 4
    scratch = load_package(tmp_path / "study" / "n1_scratch").training
    pretrained = load_package(tmp_path / "study" / "n1_pretrained").training
    assert scratch["cases"] == pretrained["cases"] == 1 and scratch["init_load"] is None and "encoder" in pretrained["init_load"]


def test_sigterm_stops_finetuning_with_a_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    data = labelled_phantoms(tmp_path / "data")
    events = tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "swinssl", "finetune", "--data", str(data), "--out", str(tmp_path / "model"), "--classes", "liver", "spleen",
         "--spacing", "4", "4", "4", "--roi", "64", "--feature-size", "12", "--steps", "500", "--val-every", "1000", "--device", "cpu",
         "--events", str(events)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (events.exists() and any(e["event"] == "progress" for e in read_events(events))):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == EXIT_STOPPED
    stopped = [e for e in read_events(events) if e["event"] == "stopped"][-1]
    assert load_checkpoint(tmp_path / "model" / "training" / "checkpoint.pt")["step"] == stopped["step"]
    result = run_cli("finetune", "--out", str(tmp_path / "model"), "--resume", "--steps", str(stopped["step"] + 1), "--val-every", "1")
    assert result.returncode == EXIT_OK, result.stderr
    assert load_package(tmp_path / "model").labels.names == ["liver", "spleen"]


def test_class_balanced_crops_centre_small_structures_as_often_as_large_ones():
    from swinssl.finetune.dataset import PreparedCase
    from swinssl.finetune.sampler import LabelledCropSampler
    from swinssl.preprocessing.spatial import Geometry

    label = np.zeros((80, 80, 80), np.uint8)
    label[5:45, 5:45, 5:45] = 1  # a "liver": 64,000 voxels
    label[70:72, 70:72, 70:72] = 2  # a "gland": 8 voxels
    case = PreparedCase("case", np.zeros((1, 80, 80, 80), np.float16), label, np.array([True, True, True]),
                        Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), tuple(np.eye(3).ravel())), "training")
    shares = {}
    for sampling in ("posneg", "classes"):
        sampler = LabelledCropSampler([case], 32, 1, seed=0, positive_fraction=1.0, sampling=sampling)
        centres = [sampler._centre(np.random.default_rng(step), 0) for step in range(400)]
        shares[sampling] = np.mean([label[tuple(c)] == 2 for c in centres])
    assert shares["posneg"] < 0.02 and 0.4 < shares["classes"] < 0.6, shares


def test_validation_region_is_the_annotated_box_grown_by_the_margin():
    from swinssl.finetune.validation import validation_region

    label = np.zeros((50, 40, 30), np.uint8)  # (X, Y, Z)
    label[10:20, 5:8, 12:13] = 2
    label[30:32, 30:31, 0:1] = 1  # class 1 is not annotated in this case: its voxels do not count
    present = np.array([True, False, True])
    assert validation_region(label, present, margin=4) == (slice(6, 24), slice(1, 12), slice(8, 17))
    assert validation_region(label, np.array([True, True, True]), margin=4) == (slice(6, 36), slice(1, 35), slice(0, 17))
    assert validation_region(label, np.array([True, False, False]), margin=4) == (slice(0, 50), slice(0, 40), slice(0, 30))


def test_fine_tuning_from_a_model_inherits_its_input_scores_both_on_the_same_cases_and_refuses_what_does_not_fit(tmp_path):
    """Correct and retrain at the engine: ``--init`` a model package keeps its spacing, window, ROI, feature size,
    classes and patch merging; the parent and the tuned model are scored on the same held-out case; the ETA counts
    validation; a folder without labelled cases is named; a feature size that does not fit is refused before any step."""
    from test_segmentation import ORGANS, make_package

    parent = make_package(tmp_path / "parent", spacing=(4.0, 4.0, 4.0))  # CT without a window: -1000..1000 HU
    data = labelled_phantoms(tmp_path / "data")
    (data / "labels.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))
    (tmp_path / "empty").mkdir()
    events = tmp_path / "tuned.jsonl"
    result = run_cli("finetune", "--data", str(data), str(tmp_path / "empty"), "--init", str(parent.path), "--out", str(tmp_path / "tuned"),
                     "--steps", "2", "--val-every", "2", "--device", "cpu", "--events", str(events))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "tuned" / "training" / "config.json").read_text(encoding="utf-8"))
    inherited = {key: config[key] for key in ("spacing", "window", "roi", "feature_size", "classes", "patch_merging")}
    assert inherited == {"spacing": [4.0, 4.0, 4.0], "window": [-1000.0, 1000.0], "roi": 64, "feature_size": 12, "classes": ORGANS,
                         "patch_merging": "v1.5"}
    log = read_events(events)
    assert any(e["event"] == "warning" and e["file"] == str(tmp_path / "empty") and "no labelled case" in e["reason"] for e in log)
    done = next(e for e in log if e["event"] == "done")
    comparison = done["comparison"]
    assert done["parent"]["name"] == "tiny-abdomen" and comparison["validated_on"] == "held-out cases"
    scored = {row["segment"] for row in comparison["rows"] if row["parent"] is not None and row["tuned"] is not None}
    assert scored and scored <= {"liver", "spleen"}  # both models on the same case's annotated segments
    assert comparison["worse"] == (comparison["tuned_mean"] < comparison["parent_mean"])
    assert ("tuned is WORSE than tiny-abdomen" in result.stdout) == comparison["worse"] and "held-out Dice" in result.stdout
    assert comparison["worse"] or "tuned is not worse" in result.stdout
    assert load_package(tmp_path / "tuned").metrics["comparison"]["parent_mean"] == comparison["parent_mean"]

    start = next(e for e in log if e["event"] == "start")
    parent_scored = max(e["time"] for e in log if e.get("model") == "parent") - start["time"]
    first = next(e for e in log if e["event"] == "progress" and e.get("step") == 1 and "stage" not in e)
    assert first["eta_s"] >= first["step_s"] + 0.9 * parent_scored  # the validation at step 2 is in the ETA

    refused = run_cli("finetune", "--data", str(data), "--init", str(parent.path), "--out", str(tmp_path / "wide"), "--feature-size", "24",
                      "--steps", "1", "--device", "cpu")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"--init {parent.path}: the model 'tiny-abdomen' has feature size 12; --feature-size 24 does not fit" in refused.stderr
    assert not (tmp_path / "wide" / "training" / "checkpoint.pt").exists()


def test_what_does_not_fit_a_parent_model_is_named_and_the_verdict_says_worse_plainly(tmp_path):
    from swinssl.finetune.parent import check_fits_parent, comparison_lines, compare_with_parent, inherit_from_parent
    from test_segmentation import make_package

    parent = make_package(tmp_path / "parent")
    data = labelled_phantoms(tmp_path / "data")
    fits = FinetuneConfig(**inherit_from_parent({"init": str(parent.path), "data": [str(data)]}))
    check_fits_parent(fits, parent)
    for change, message in (({"channel_presets": ["ct", "pet"]}, "takes 1 input channel"), ({"patch_merging": "legacy"}, "scramble"),
                            ({"classes": ["spleen", "liver", "kidney_right"]}, "would read its outputs as other segments")):
        with pytest.raises(ValueError, match=message):
            check_fits_parent(FinetuneConfig(**inherit_from_parent({"init": str(parent.path), "data": [str(data)], **change})), parent)
    fewer = {"init": str(parent.path), "data": [str(data)], "classes": ["liver", "spleen"]}  # another head: only the encoder is loaded
    check_fits_parent(FinetuneConfig(**inherit_from_parent(fewer)), parent)

    comparison = compare_with_parent({"name": "demo-organs", "dice": {"liver": 0.95, "spleen": 0.93}}, {"liver": 0.97, "spleen": 0.20},
                                     "training cases (too few cases to hold any out)")
    lines = comparison_lines(comparison, "demo-organs-tuned-1")
    assert lines[0] == ("demo-organs-tuned-1 is WORSE than demo-organs on the same cases (training-case Dice): mean 0.585 vs 0.940. "
                        "Keep using demo-organs.")
    assert lines[1:] == ["liver: demo-organs 0.950, demo-organs-tuned-1 0.970", "spleen: demo-organs 0.930, demo-organs-tuned-1 0.200"]
    better = compare_with_parent({"name": "m", "dice": {"liver": 0.5, "spleen": 0.5}}, {"liver": 0.9, "spleen": 0.45}, "held-out cases")
    assert comparison_lines(better, "m-tuned-1")[0] == ("m-tuned-1 is not worse on average than m (held-out Dice: mean 0.675 vs 0.500) "
                                                        "but WORSE on spleen.")
