"""``python -m benchmarks.run [--quick] [--only W ...] [--json OUT.json]``: ours vs the reference, side by side.

Workloads (see each module): ``inference`` (sliding windows on the real abdomen CT vs MONAI's
``sliding_window_inference``), ``paper_size`` (feature 48, ROI 96, 14 classes on a 4-window crop: model-only
and end-to-end ratios), ``bf16_cpu`` (bf16 autocast vs fp32 on the CPU: paper-size speed, label agreement of
the trained demo model on the real CT), ``openvino`` (the OpenVINO backend vs PyTorch vs MONAI: paper-size per window, and end to end on the full 512 x 512 real chest CT with the demo model), ``memory`` (peak RSS on a large CT-like volume vs MONAI's bundle
pipeline), ``cache`` (building the pretraining cache from real CTs: serial vs a worker per core vs two
ranks, volumes/s), ``pretraining`` (steps/s vs a decode-every-step research-style loop and vs MONAI ``CacheDataset``),
``pretraining_real`` (the same on full-resolution CTs at native spacing) and ``scaling``
(1 vs 2 torchrun processes). Each runs the reference and ours back to back in one run; the
table shows the ratios and the JSON has every figure and the machine.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from benchmarks import bf16_cpu, cache_build, inference, memory, openvino, paper_size, pretraining, scaling
from benchmarks.common import machine

WORKLOADS = ("inference", "paper_size", "bf16_cpu", "openvino", "memory", "cache", "pretraining", "pretraining_real", "scaling")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model and inputs: about 2 minutes on 2 CPU cores")
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=list(WORKLOADS), help="run only these workloads")
    parser.add_argument("--repeats", type=int, help="timed repeats of the inference workload (default: 1 quick, 3 full)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    started = time.perf_counter()
    result: dict = {"machine": machine(), "quick": args.quick, "date": time.strftime("%Y-%m-%d"),
                    "inference_speedup": None, "label_agreement": None, "peak_memory_ratio": None,
                    "pretrain_speedup": None, "data_wait_fraction": None, "scaling": None}
    rows = []
    if "inference" in args.only:
        figures = result["inference"] = inference.run(args.quick, args.repeats or (1 if args.quick else 3))
        result.update(inference_speedup=figures["inference_speedup"], label_agreement=figures["label_agreement"])
        rows.append(("inference", f"{figures['reference_s']:.1f} s", f"{figures['ours_s']:.1f} s", f"{figures['inference_speedup']:.2f}x faster",
                     f"labels agree on {figures['label_agreement']:.3%}; reference at {figures['reference_share_of_peak']:.0%} of GEMM peak"))
    if "paper_size" in args.only:
        figures = result["paper_size"] = paper_size.run(args.repeats or 1)
        rows.append(("paper size", f"{figures['reference_s']:.1f} s", f"{figures['ours_s']:.1f} s", f"{figures['end_to_end_speedup']:.2f}x faster",
                     f"model only {figures['model_only_speedup']:.2f}x (batch of {figures['model_batch']}); labels agree on {figures['label_agreement']:.3%}"))
    if "bf16_cpu" in args.only:
        figures = result["bf16_cpu"] = bf16_cpu.run(args.repeats or 1)
        rows.append(("bf16 (CPU)", f"{figures['paper_size_fp32_s']:.1f} s fp32", f"{figures['paper_size_bf16_s']:.1f} s bf16",
                     f"{figures['bf16_speedup']:.2f}x faster", f"trained demo model on the real CT: labels agree on {figures['label_agreement']:.3%}, "
                     f"{figures['foreground_agreement']:.2%} of organ voxels"))
    if "openvino" in args.only:
        figures = result["openvino"] = openvino.run(args.repeats or 1)
        flags = figures["cpu_flags"]
        print(f"CPU flags: avx512_bf16 {flags['avx512_bf16']}, amx_bf16 {flags['amx_bf16']}, amx_tile {flags['amx_tile']}; "
              f"OpenVINO {flags['openvino']} sees {' '.join(flags['openvino_capabilities'])}")
        for part, label in (("per_window", "window"), ("end_to_end", "end to end")):
            reference = figures[part]["rows"]["monai"]["s"]
            for name, row in figures[part]["rows"].items():
                if name == "monai":
                    continue
                organs = f", organ voxels {row['organ_voxel_agreement']:.3%}" if row.get("organ_voxel_agreement") is not None else ""
                memory = f", peak {row['peak_ratio']:.2f}x MONAI's" if row.get("peak_ratio") is not None else ""
                rows.append((f"{label} {name}", f"{reference:.1f} s MONAI", f"{row['s']:.1f} s", f"{row['speedup']:.2f}x faster",
                             f"labels agree on {row['label_agreement']:.3%}{organs}{memory}"))
    if "memory" in args.only:
        figures = result["memory"] = memory.run(args.quick)
        result["peak_memory_ratio"] = figures["peak_memory_ratio"]
        rows.append(("memory", f"{figures['reference']['peak'] / 1e9:.2f} GB", f"{figures['ours']['peak'] / 1e9:.2f} GB",
                     f"{figures['peak_memory_ratio']:.2f}x", f"above the post-import baseline: {figures['peak_above_baseline_ratio']:.2f}x"))
    if "cache" in args.only:
        figures = result["cache"] = cache_build.run(args.quick)
        rate = figures["volumes_per_s"]
        rows.append(("cache", f"{rate['serial']:.2f} volumes/s", f"{rate['workers']:.2f} volumes/s", f"{figures['workers_speedup']:.2f}x faster",
                     f"{figures['volumes']} real CTs; serial vs {figures['cores']} workers; 2 ranks x 1 worker: {figures['ranks_speedup']:.2f}x"))
    for name, real_shaped in (("pretraining", False), ("pretraining_real", True)):
        if name not in args.only:
            continue
        figures = result[name] = pretraining.run(args.quick, real_shaped)
        if not real_shaped:
            result.update(pretrain_speedup=figures["pretrain_speedup"], data_wait_fraction=figures["data_wait_fraction"])
        rows.append((name, f"{figures['reference_step_s']:.2f} s/step", f"{figures['ours_step_s']:.2f} s/step",
                     f"{figures['pretrain_speedup']:.2f}x faster", f"data wait {figures['data_wait_fraction']:.1%} (reference: {figures['reference_data_fraction']:.0%} decoding)"))
        rows.append((name + " vs cache", f"{figures['cached_reference_step_s']:.2f} s/step", f"{figures['ours_step_s']:.2f} s/step",
                     f"{figures['pretrain_speedup_vs_cached']:.2f}x faster", f"MONAI CacheDataset (built in {figures['cached_reference_build_s']:.0f} s)"))
    if "scaling" in args.only:
        figures = result["scaling"] = scaling.run(args.quick)
        rows.append(("scaling", f"{figures['samples_per_s_1_process']:.2f} samples/s", f"{figures['samples_per_s_2_processes']:.2f} samples/s",
                     f"{figures['scaling']:.2f}x", "1 vs 2 torchrun processes (gloo)"))
    result["wall_s"] = time.perf_counter() - started
    print(f"{'workload':12s} {'reference':>18s} {'ours':>18s} {'ratio':>14s}  notes")
    for name, reference, ours, ratio, notes in rows:
        print(f"{name:12s} {reference:>18s} {ours:>18s} {ratio:>14s}  {notes}")
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} threads, GPU: {result['machine']['gpu']}; {result['wall_s']:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
