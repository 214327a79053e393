"""swinssl evaluate: Dice against its formula, HD95 and surface Dice on shapes with known distances, name matching."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, run_cli
from swinssl.evaluate import evaluate
from swinssl.labels.segmentation_file import write_label_map
from swinssl.labels.table import LabelTable


def label_image(array_kji: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array_kji.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def test_metrics_on_shifted_cubes(tmp_path):
    ref = np.zeros((30, 30, 30), np.uint8)
    ref[10:20, 10:20, 10:20] = 1
    pred = np.zeros_like(ref)
    pred[10:20, 10:20, 13:23] = 1  # shifted 3 voxels along i (1 mm each)
    pred[2:5, 2:5, 2:5] = 2  # a class absent from the reference
    write_label_map(label_image(ref), LabelTable.from_names(["liver"]), tmp_path / "ref.nii.gz")
    write_label_map(label_image(pred), LabelTable.from_names(["Liver", "spleen"]), tmp_path / "pred.seg.nrrd")
    result = evaluate(tmp_path / "pred.seg.nrrd", tmp_path / "ref.nii.gz", tolerance_mm=3.0)
    liver = result["classes"]["liver"]
    overlap = int(((pred == 1) & (ref == 1)).sum())
    assert liver["dice"] == pytest.approx(2 * overlap / (int((pred == 1).sum()) + int(ref.sum())))
    assert 1.0 <= liver["hd95_mm"] <= 3.0 + 1e-6  # no surface point is more than the 3 mm shift away
    assert liver["surface_dice"] == pytest.approx(1.0)  # every surface point within the 3 mm tolerance
    assert result["predicted_classes_not_in_reference"] == ["spleen"]
    strict = evaluate(tmp_path / "pred.seg.nrrd", tmp_path / "ref.nii.gz", tolerance_mm=0.5)
    assert strict["classes"]["liver"]["surface_dice"] < 0.9


def test_a_nifti_label_table_keeps_its_name_and_is_found_by_evaluate_and_the_overwrite_check(tmp_path):
    """``CASE.01.nii.gz`` gets ``CASE.01.json`` (the writer used to lowercase it and drop '.01'), which evaluate reads
    and ``segment`` refuses to replace without --overwrite."""
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[3:8, 3:8, 3:8] = 1
    written = write_label_map(label_image(ref), LabelTable.from_names(["liver"]), tmp_path / "CASE.01.nii.gz")
    assert [path.name for path in written] == ["CASE.01.nii.gz", "CASE.01.json"]
    result = evaluate(tmp_path / "CASE.01.nii.gz", tmp_path / "CASE.01.nii.gz")
    assert result["classes"]["liver"]["dice"] == pytest.approx(1.0)  # named from the table, not 'label 1'
    (tmp_path / "CASE.01.nii.gz").unlink()  # only the table is left to protect
    refused = run_cli("segment", "--model", "demo-organs", "--input", str(REPO / "swinssl" / "resources" / "demo_ct.nii.gz"),
                      "--output", str(tmp_path / "CASE.01.nii.gz"))
    assert refused.returncode != 0 and "CASE.01.json" in refused.stderr and "--overwrite" in refused.stderr, refused.stderr


def test_identical_maps_are_perfect_and_empty_prediction_scores_zero(tmp_path):
    ref = np.zeros((20, 20, 20), np.uint8)
    ref[5:12, 5:15, 6:9] = 1
    write_label_map(label_image(ref), LabelTable.from_names(["tumour"]), tmp_path / "ref.seg.nrrd")
    perfect = evaluate(tmp_path / "ref.seg.nrrd", tmp_path / "ref.seg.nrrd")["classes"]["tumour"]
    assert perfect == {"dice": 1.0, "hd95_mm": 0.0, "surface_dice": 1.0}
    write_label_map(label_image(np.zeros_like(ref)), LabelTable.from_names(["tumour"]), tmp_path / "empty.seg.nrrd")
    assert evaluate(tmp_path / "empty.seg.nrrd", tmp_path / "ref.seg.nrrd")["classes"]["tumour"]["dice"] == 0.0


def test_cli_writes_json_and_markdown_against_a_real_reference(tmp_path, shared_data):
    reference = shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz"
    names = shared_data / "ct" / "totalsegmentator_label_names.json"
    image = sitk.ReadImage(str(reference))
    liver = sitk.Cast(image == 5, sitk.sitkUInt8)
    write_label_map(liver, LabelTable.from_names(["liver"]), tmp_path / "pred.seg.nrrd")
    result = run_cli("evaluate", "--pred", str(tmp_path / "pred.seg.nrrd"), "--ref", str(reference), "--ref-names", str(names),
                     "--json", str(tmp_path / "m.json"), "--markdown", str(tmp_path / "m.md"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert list(metrics["classes"]) == ["liver"] and metrics["classes"]["liver"]["dice"] == pytest.approx(1.0)
    assert "| liver | 1.000 | 0.0 | 1.000 |" in (tmp_path / "m.md").read_text(encoding="utf-8")


def test_a_reference_on_another_grid_says_what_was_compared_and_never_scores_nothing_as_success(tmp_path, shared_data):
    """A small crop of the same scan as reference: the prediction is resampled onto it and the result says so; a crop
    without the predicted organ leaves nothing to score, which is an error naming why, not a table of n/a."""
    labels = sitk.ReadImage(str(shared_data / "ct" / "abdomen_ct_small_3mm_labels.nii.gz"))
    names = shared_data / "ct" / "totalsegmentator_label_names.json"
    write_label_map(sitk.Cast(labels == 5, sitk.sitkUInt8), LabelTable.from_names(["liver"]), tmp_path / "pred.seg.nrrd")
    sitk.WriteImage(labels[40:110, 20:90, :], str(tmp_path / "with_liver.nii.gz"))  # (I, J, K) crop through the liver
    result = evaluate(tmp_path / "pred.seg.nrrd", tmp_path / "with_liver.nii.gz", ref_names_path=names)
    assert result["classes"]["liver"]["dice"] == pytest.approx(1.0)
    assert "resampled (nearest neighbour) onto the reference grid (size (70, 70, 30)" in result["compared"] and "covers 100%" in result["compared"]
    sitk.WriteImage(labels[0:40, :, :], str(tmp_path / "no_liver.nii.gz"))
    cli = run_cli("evaluate", "--pred", str(tmp_path / "pred.seg.nrrd"), "--ref", str(tmp_path / "no_liver.nii.gz"), "--ref-names", str(names))
    assert cli.returncode == 1 and "| liver |" not in cli.stdout
    assert "nothing to score (liver: absent from both maps)" in cli.stderr and "resampled (nearest neighbour)" in cli.stderr
