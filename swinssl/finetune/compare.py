"""``swinssl compare-init``: the label-efficiency study of Tang et al. / MONAI's tutorial.

For each N, the same fine-tune (same seed, steps, held-out validation cases) runs from random
weights and from pretrained weights on the first N training cases; the table reports both mean
validation Dice values and their difference.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from swinssl.finetune.config import FinetuneConfig
from swinssl.finetune.train import run_finetune
from swinssl.package import load_package


def compare_init(base: FinetuneConfig, pretrained: str, counts: list[int], out: Path) -> list[dict]:
    """Runs 2 x len(counts) fine-tunes under ``out`` and writes ``compare_init.json`` and ``.md``."""
    rows = []
    for count in counts:
        scores = {}
        for label, init in (("scratch", "random"), ("pretrained", pretrained)):
            run_dir = out / f"n{count}_{label}"
            run_finetune(replace(base, out=str(run_dir), init=init, train_cases=count, events=str(out / f"n{count}_{label}.jsonl")))
            metrics = load_package(run_dir).metrics
            scores[label] = metrics["mean_dice"]
            scores["validated_on"] = metrics["validated_on"]
        rows.append({"n": count, "scratch_dice": scores["scratch"], "pretrained_dice": scores["pretrained"],
                     "difference": scores["pretrained"] - scores["scratch"], "validated_on": scores["validated_on"]})
    (out / "compare_init.json").write_text(json.dumps({"pretrained": pretrained, "steps": base.steps, "seed": base.seed, "rows": rows}, indent=2))
    (out / "compare_init.md").write_text(markdown(rows, base.steps))
    return rows


def markdown(rows: list[dict], steps: int) -> str:
    lines = [f"| N labelled | scratch Dice | pretrained Dice | difference | ({steps} steps each)", "|---|---|---|---|"]
    lines += [f"| {r['n']} | {r['scratch_dice']:.3f} | {r['pretrained_dice']:.3f} | {r['difference']:+.3f} |" for r in rows]
    return "\n".join(lines) + "\n"
