"""CT+PET: pair discovery, CT-to-PET registration, 2-channel volumes through pretraining, fine-tuning and
segmentation. The PET is synthetic (built from the real abdomen CT, see ``pet_phantom.py``): no real
PET volume is available to the project."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from conftest import TINY_MODEL, run_cli, write_volume
from pet_phantom import PET_SPACING, write_ct_pet_case
from swinssl.events import read_events
from swinssl.io.pairs import find_ct_pet_pairs
from swinssl.package import load_package
from swinssl.preprocessing.cache import PrepSettings, prepare_volume
from swinssl.io.discovery import VolumeSource
from swinssl.preprocessing.intensity import IntensitySettings
from swinssl.preprocessing.registration import register_images

ORGANS = ["liver", "spleen", "kidney_right"]


@pytest.fixture(scope="module")
def ct_pet_folder(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("ctpet") / "pairs"
    motion = write_ct_pet_case(shared_data, folder)
    return folder, motion


def test_pairs_are_found_by_either_naming_rule_and_orphans_are_reported(tmp_path):
    volume = np.zeros((4, 5, 6), np.int16)
    volume[1, 1, 1] = 5
    for name in ("a_ct.nii.gz", "a_pet.nii.gz", "a_labels.nii.gz", "b_CT.nrrd", "lonely_pet.nii.gz"):
        write_volume(tmp_path / "side" / name, volume)
    write_volume(tmp_path / "side" / "B_pet.nrrd", volume)
    for name in ("ct/p1.nii.gz", "pet/p1.nii.gz", "labels/p1.nii.gz", "ct/p2.nii.gz"):
        write_volume(tmp_path / "sub" / name, volume)
    pairs, unpaired = find_ct_pet_pairs([tmp_path])
    found = {(p.case, p.ct.name, p.pet.name, p.label.name if p.label else None) for p in pairs}
    assert found == {("a", "a_ct.nii.gz", "a_pet.nii.gz", "a_labels.nii.gz"), ("b", "b_CT.nrrd", "B_pet.nrrd", None),
                     ("p1", "p1.nii.gz", "p1.nii.gz", "p1.nii.gz")}
    assert {p.name for p in unpaired} == {"lonely_pet.nii.gz", "p2.nii.gz"}


def test_rigid_registration_recovers_the_known_motion_within_one_pet_voxel(ct_pet_folder):
    folder, motion = ct_pet_folder
    ct, pet = sitk.ReadImage(str(folder / "patient1_ct.nii.gz")), sitk.ReadImage(str(folder / "patient1_pet.nii.gz"))
    registration = register_images(pet, ct)
    size = pet.GetSize()
    corners = [pet.TransformIndexToPhysicalPoint([x, y, z]) for x in (0, size[0] - 1) for y in (0, size[1] - 1) for z in (0, size[2] - 1)]
    errors = [np.linalg.norm(np.subtract(registration.transform.TransformPoint(p), motion.TransformPoint(p))) for p in corners]
    assert max(errors) < PET_SPACING, errors  # within one PET voxel at every corner of the field of view
    assert max(errors) < 2.0  # in fact well under half a voxel
    identity_errors = [np.linalg.norm(np.subtract(p, motion.TransformPoint(p))) for p in corners]
    assert min(identity_errors) > 5.0  # the motion was large enough to matter


def test_align_then_pretrain_finetune_and_segment_two_channels(tmp_path, ct_pet_folder):
    folder, motion = ct_pet_folder
    events = tmp_path / "align.jsonl"
    result = run_cli("align", "--data", str(folder), "--out", str(tmp_path / "aligned"), "--events", str(events))
    assert result.returncode == 0, result.stderr
    aligned = [e for e in read_events(events) if e["event"] == "progress" and e["stage"] == "align"]
    assert len(aligned) == 1 and aligned[0]["registration"]["kind"] == "Euler3DTransform"
    assert aligned[0]["registration"]["metric"] < 0
    stacked = sitk.ReadImage(str(tmp_path / "aligned" / "patient1_ctpet.nrrd"))
    pet = sitk.ReadImage(str(folder / "patient1_pet.nii.gz"))
    assert stacked.GetNumberOfComponentsPerPixel() == 2 and stacked.GetSize() == pet.GetSize()
    assert np.allclose(stacked.GetSpacing(), pet.GetSpacing()) and np.allclose(stacked.GetOrigin(), pet.GetOrigin())
    labels = sitk.ReadImage(str(tmp_path / "aligned" / "patient1_ctpet_labels.nrrd"))
    assert labels.GetSize() == pet.GetSize()

    run = run_cli("pretrain", "--data", str(tmp_path / "aligned"), "--channel-presets", "ct", "pet", "--swinfuse", "--batch-size", "2",
                  "--steps", "2", *TINY_MODEL, "--out", str(tmp_path / "ssl"), "--events", str(tmp_path / "ssl.jsonl"), "--cache-dir", str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    log = read_events(tmp_path / "ssl.jsonl")
    start = next(e for e in log if e["event"] == "start")
    assert start["config"]["in_channels"] == 2 and start["volumes"] == 1
    # the domain-invariance module runs on 2-channel crops; with one modality the density term is 0, and the run says so
    assert any(e["event"] == "warning" and "density term (JSD) stays 0" in e["reason"] for e in log)
    assert all(e["losses"]["jsd"] == 0 for e in log if e["event"] == "progress")

    result = run_cli("finetune", "--data", str(tmp_path / "aligned"), "--channel-presets", "ct", "pet", "--classes", *ORGANS,
                     "--init", str(tmp_path / "ssl"), "--spacing", "4", "4", "4", "--roi", "64", "--feature-size", "12", "--steps", "2",
                     "--val-every", "2", "--device", "cpu", "--out", str(tmp_path / "model"), "--events", str(tmp_path / "ft.jsonl"))
    assert result.returncode == 0, result.stderr
    package = load_package(tmp_path / "model")
    assert [(c.modality, c.preset) for c in package.channels] == [("CT", "ct"), ("PET", "pet")]
    assert json.loads((tmp_path / "model" / "model.json").read_text(encoding="utf-8"))["channels"][1]["preset"] == "pet"

    output = tmp_path / "seg.seg.nrrd"
    result = run_cli("segment", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "aligned" / "patient1_ctpet.nrrd"),
                     "--output", str(output), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    segmentation = slicerio.read_segmentation(str(output))
    assert [s["name"] for s in segmentation["segments"]] == ORGANS
    assert sitk.ReadImage(str(output)).GetSize() == pet.GetSize()


def test_each_channel_gets_its_own_preset(tmp_path, ct_pet_folder):
    folder, _ = ct_pet_folder
    result = run_cli("align", "--data", str(folder), "--out", str(tmp_path / "aligned"), "--no-register")
    assert result.returncode == 0, result.stderr
    settings = PrepSettings((IntensitySettings("ct"), IntensitySettings("pet", pet_percentile=99.0)), orient_ras=False, crop_foreground=False,
                            min_size=(1, 1, 1), in_channels=2)
    array, _ = prepare_volume(VolumeSource(tmp_path / "aligned" / "patient1_ctpet.nrrd"), settings)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "aligned" / "patient1_ctpet.nrrd")))  # (K, J, I, C)
    ct_raw, pet_raw = raw[..., 0].transpose(2, 1, 0), raw[..., 1].transpose(2, 1, 0)
    assert np.allclose(array[0], np.clip((ct_raw + 1000) / 2000, 0, 1), atol=1e-5)  # CT window, not the PET's
    assert np.allclose(array[1], np.clip(pet_raw / np.percentile(pet_raw, 99.0), 0, 1), atol=1e-4)
    assert (array[1] == 1).mean() == pytest.approx(0.01, abs=0.005)  # the top 1 % of uptake saturates


def test_segment_registers_separately_acquired_inputs_onto_the_first(tmp_path, ct_pet_folder):
    """Two volumes as Slicer passes them (CT and PET, each on its own grid): --register aligns the PET to the CT."""
    import torch

    from swinssl.labels.table import LabelTable
    from swinssl.network import build_swin_unetr
    from swinssl.package import InputChannel, ModelPackage

    folder, motion = ct_pet_folder
    torch.manual_seed(0)
    package = ModelPackage("ctpet", LabelTable.from_names(ORGANS), [InputChannel("CT", "ct"), InputChannel("PET", "pet")], (6.0, 6.0, 6.0), 64, 12)
    package.save(tmp_path / "model", build_swin_unetr(2, len(ORGANS) + 1, 12).state_dict())
    events = tmp_path / "events.jsonl"
    ct_path, pet_path = folder / "patient1_ct.nii.gz", folder / "patient1_pet.nii.gz"
    result = run_cli("segment", "--model", str(tmp_path / "model"), "--input", str(ct_path), str(pet_path), "--register",
                     "--output", str(tmp_path / "seg.seg.nrrd"), "--device", "cpu", "--events", str(events))
    assert result.returncode == 0, result.stderr
    step = next(e for e in read_events(events) if e["event"] == "progress" and e.get("stage") == "register")
    fitted = sitk.Euler3DTransform()
    fitted.SetFixedParameters(step["registration"]["fixed_parameters"])
    fitted.SetParameters(step["registration"]["parameters"])
    ct = sitk.ReadImage(str(ct_path))
    inverse = motion.GetInverse()  # CT point -> PET point
    size = ct.GetSize()
    corners = [ct.TransformIndexToPhysicalPoint([x, y, z]) for x in (10, size[0] - 10) for y in (10, size[1] - 10) for z in (10, size[2] - 10)]
    errors = [np.linalg.norm(np.subtract(fitted.TransformPoint(p), inverse.TransformPoint(p))) for p in corners]
    assert max(errors) < PET_SPACING, errors
    assert sitk.ReadImage(str(tmp_path / "seg.seg.nrrd")).GetSize() == ct.GetSize()  # on the first input's grid


def test_align_skips_a_bad_pair_with_a_warning_naming_the_file_and_aligns_the_rest(tmp_path, ct_pet_folder):
    folder, _ = ct_pet_folder
    data = tmp_path / "data"
    data.mkdir()
    for name in ("patient1_ct.nii.gz", "patient1_pet.nii.gz", "labels.json"):
        (data / name).write_bytes((folder / name).read_bytes())
    (data / "broken_ct.nii.gz").write_bytes(b"not a volume")
    (data / "broken_pet.nii.gz").write_bytes((folder / "patient1_pet.nii.gz").read_bytes())
    (data / "orphan_pet.nii.gz").write_bytes((folder / "patient1_pet.nii.gz").read_bytes())
    events = tmp_path / "events.jsonl"
    result = run_cli("align", "--data", str(data), "--out", str(tmp_path / "aligned"), "--events", str(events))
    assert result.returncode == 0, result.stderr
    warnings = {e["file"]: e["reason"] for e in read_events(events) if e["event"] == "warning"}
    assert warnings[str(data / "broken_ct.nii.gz")].startswith("unreadable")
    assert "no CT/PET partner" in warnings[str(data / "orphan_pet.nii.gz")]
    assert (tmp_path / "aligned" / "patient1_ctpet.nrrd").exists() and not (tmp_path / "aligned" / "broken_ctpet.nrrd").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("align", "--data", str(empty), "--out", str(tmp_path / "none"))
    assert result.returncode == 1 and f"no CT/PET pairs in {empty}" in result.stderr
