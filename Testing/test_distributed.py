"""Two CPU processes (gloo): contrastive negatives are gathered from all ranks; torchrun runs end to end."""

import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import TINY_MODEL, phantom_ct, run_cli, write_volume
from swinssl.events import EventLog, read_events
from swinssl.ssl.losses import nt_xent
from swinssl.training.checkpoint import load_checkpoint
from swinssl.training.distributed import Runtime
from swinssl.training.pretrain import split_views


def _worker(rank: int, world: int, store_path: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world)
    torch.manual_seed(0)
    everything = torch.randn(world, 2, 3, 5)  # (rank, view, crop, dim): same on all ranks
    local = everything[rank].reshape(6, 5).clone().requires_grad_(True)  # [view 1; view 2] of this rank
    z1, z2 = split_views(local, Runtime(rank, world, torch.device("cpu")))
    loss = nt_xent(z1, z2, 0.5)
    loss.backward()
    results[rank] = (float(loss), local.grad.clone())
    dist.destroy_process_group()


def test_contrastive_loss_over_two_ranks_equals_the_single_process_loss_on_all_crops(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
    torch.manual_seed(0)
    everything = torch.randn(2, 2, 3, 5).requires_grad_(True)
    reference = nt_xent(everything[:, 0].reshape(6, 5), everything[:, 1].reshape(6, 5), 0.5)
    reference.backward()
    for rank in range(2):
        loss, grad = results[rank]
        assert abs(loss - float(reference.detach())) < 1e-6  # 2 x 3 crops -> 10 negatives per anchor, not 4
        # DDP averages gradients over ranks; each rank's share is world_size x the true gradient.
        assert torch.allclose(grad / 2, everything.grad[rank].reshape(6, 5), atol=1e-6)


def test_torchrun_two_processes_on_the_cpu(tmp_path):
    data = tmp_path / "data"
    for seed in range(2):
        write_volume(data / f"ct_{seed}.nii.gz", phantom_ct((36, 40, 44), seed=seed), spacing=(2.0, 2.0, 2.0))
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "swinssl", "pretrain",
        "--data", str(data), "--out", str(out), "--events", str(out / "events.jsonl"), "--cache-dir", str(tmp_path / "cache"),
        "--steps", "3", "--batch-size", "1", "--checkpoint-every", "2", *TINY_MODEL,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_events(out / "events.jsonl")
    start = [e for e in log if e["event"] == "start"]
    assert len(start) == 1 and start[0]["world_size"] == 2  # only rank 0 writes events
    assert not [e for e in log if e["event"] == "warning" and "no negatives" in e["reason"]]  # 2 crops in all
    assert [e["step"] for e in log if e["event"] == "progress"] == [1, 2, 3]
    assert log[-1]["event"] == "done"
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3


def test_swinfuse_with_one_crop_per_process_compares_the_modalities_on_every_step(tmp_path, shared_data):
    """Batch size 1 on two processes: the ranks take alternate modalities and the JSD is computed on the
    features of both, so it is above 0 on every step (with one process it could never be)."""
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "swinssl", "pretrain",
        "--data", str(shared_data / "ct"), str(shared_data / "mr"), "--modality", "ct", "mr", "--swinfuse", "--spacing", "6", "6", "6",
        "--out", str(out), "--events", str(out / "events.jsonl"), "--cache-dir", str(tmp_path / "cache"),
        "--steps", "3", "--batch-size", "1", "--checkpoint-every", "10", *TINY_MODEL,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_events(out / "events.jsonl")
    jsd = [e["losses"]["jsd"] for e in log if e["event"] == "progress"]
    assert len(jsd) == 3 and all(value > 0 for value in jsd), jsd
    assert not [e for e in log if e["event"] == "warning" and "JSD stays 0" in e["reason"]]
    single = run_cli("pretrain", "--data", str(shared_data / "ct"), str(shared_data / "mr"), "--modality", "ct", "mr", "--swinfuse",
                     "--spacing", "6", "6", "6", "--out", str(tmp_path / "single"), "--cache-dir", str(tmp_path / "cache"), "--steps", "1",
                     "--batch-size", "1", *TINY_MODEL)
    assert single.returncode == 0, single.stderr
    assert "a step holds 1 crop, so no step can compare two modalities" in single.stderr


def test_torchrun_fine_tunes_with_two_processes_and_shares_the_validation_cases(tmp_path):
    """DDP fine-tuning: each rank validates one of the two held-out cases; the mean Dice in the event equals
    a one-process validation of the saved package on both cases."""
    from test_finetune import labelled_phantoms, tiny_finetune

    from swinssl.finetune.train import load_cases, split_cases
    from swinssl.finetune.validation import validate
    from swinssl.package import load_package

    data = labelled_phantoms(tmp_path / "data")
    out = tmp_path / "model"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "swinssl", "finetune",
        "--data", str(data), "--out", str(out), "--events", str(tmp_path / "events.jsonl"), "--classes", "liver", "spleen",
        "--spacing", "4", "4", "4", "--roi", "64", "--feature-size", "12", "--steps", "3", "--val-every", "3", "--val-cases", "2",
        "--lr", "1e-3", "--warmup-steps", "1", "--device", "cpu",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    log = read_events(tmp_path / "events.jsonl")
    start = [e for e in log if e["event"] == "start"]
    assert len(start) == 1 and start[0]["world_size"] == 2 and start[0]["validation_cases"] == 2  # only rank 0 writes events
    steps = [e for e in log if e["event"] == "progress" and e.get("stage") != "validation"]
    assert [e["step"] for e in steps] == [1, 2, 3]
    validation_progress = [e for e in log if e.get("stage") == "validation"]
    assert validation_progress and {(e["case"], e["cases"]) for e in validation_progress} == {(1, 2)}  # rank 0 segmented case 1 of 2
    assert log[-1]["event"] == "done" and load_checkpoint(out / "training" / "checkpoint.pt")["step"] == 3

    package = load_package(out)
    assert package.training["processes"] == 2
    config = tiny_finetune(data, tmp_path / "unused", val_cases=2)
    table, cases, _ = load_cases(config, EventLog(), tmp_path)
    _, validation_cases, _ = split_cases(cases, config)
    serial = validate(package.build_network(), validation_cases, table, config, Runtime(0, 1, torch.device("cpu")))
    reported = steps[-1]["val_dice"]
    assert set(serial) == set(reported) and all(abs(serial[name] - reported[name]) < 1e-6 for name in serial), (serial, reported)
