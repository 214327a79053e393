"""Single-process or ``torchrun`` multi-process (DDP) execution: gloo on the CPU, nccl on GPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local GPU when there is one, else the CPU; ``cuda`` fails without a GPU."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def start_runtime(device_preference: str) -> Runtime:
    """Joins the process group when started by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Runtime(rank, world_size, device)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Concatenates (N, D) tensors of all ranks in rank order; gradients flow back to each rank."""
    if not runtime.distributed:
        return tensor
    return torch.cat(dist_functional.all_gather(tensor), dim=0)


def gather(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Concatenates (N, ...) tensors of all ranks in rank order, without gradients (labels, indices)."""
    if not runtime.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(runtime.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_objects(items: list, runtime: Runtime) -> list:
    """The lists of picklable ``items`` of all ranks, concatenated in rank order (small results such as per-case scores)."""
    if not runtime.distributed:
        return list(items)
    parts: list = [None] * runtime.world_size
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True on every rank when the flag is set on any rank (so all ranks stop at the same step)."""
    if not runtime.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=runtime.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 on GPUs that support it, else fp16; None (fp32) on the CPU or when AMP is off."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def use_deterministic_kernels(device: torch.device, requested: bool) -> bool:
    """Deterministic kernels: always on the CPU (cheap there; makes resume bit-exact), on GPUs on request."""
    if device.type == "cpu" or requested:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        return True
    return False
