#!/usr/bin/env bash
# Rebuilds the two small models `swinssl demo` carries in swinssl/resources/ (see ATTRIBUTION.md there):
#   demo_ssl/     a pretraining model (feature 12, ROI 64, upsample head) that has learnt the demo CT
#   demo_organs/  an organ segmentation package trained on the demo CT's TotalSegmentator pseudo-labels
# Both are trained on the bundled CT alone: they demonstrate the tool, they are not models for patients.
# Needs ../shared/data (the labels) and about 90 minutes on 2 CPU cores. Usage: scripts/train_demo_models.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-demo-models-work}
shared=../shared/data/ct
ct=swinssl/resources/demo_ct.nii.gz
swinssl=.venv/bin/swinssl
mkdir -p "$work/organ-data"

# 1. Pretraining model: the whole 30-slice slab fits a 64-voxel crop at 4.5 x 4.5 x 1.5 mm. Views are not
#    rotated (--no-rotation, rotation weight 0): with the rotation task on, the reconstructions of a model this
#    small stay a grey average for hundreds of CPU steps; without it they follow the CT within a hundred.
OMP_NUM_THREADS=1 $swinssl pretrain --data "$ct" --out "$work/ssl" --cache-dir "$work/cache" --spacing 4.5 4.5 1.5 --roi 64 \
    --feature-size 12 --decoder upsample --no-rotation --loss-weights 0 1 1 --lr 1e-3 --batch-size 2 --steps 150 \
    --preview-every 25 --checkpoint-every 25 --events "$work/ssl/events.jsonl"

# 2. Organ package: the demo CT with its pseudo-labels (TotalSegmentator output, shared/data), six organs.
cp "$ct" "$work/organ-data/demo_ct.nii.gz"
cp "$shared/abdomen_ct_small_3mm_labels.nii.gz" "$work/organ-data/demo_ct_labels.nii.gz"
cp "$shared/totalsegmentator_label_names.json" "$work/organ-data/labels.json"
organs=(liver spleen kidney_right kidney_left stomach aorta)
#    Stage 1: 200 steps with the tutorial's crops (large organs dominate), CT window -1000..1000 HU.
OMP_NUM_THREADS=1 $swinssl finetune --out "$work/organs-stage1" --data "$work/organ-data" --classes "${organs[@]}" --name demo-organs \
    --window -1000 1000 --spacing 3 3 3 --roi 64 --feature-size 12 --batch-size 2 --lr 1e-3 --steps 800 --stop-at 200 \
    --val-every 100 --checkpoint-every 50
#    Stage 2: from stage 1, class-balanced crops so that the kidneys, spleen and aorta are seen as often as the liver,
#    in the fine-tuning CT window (-175..250 HU, the default).
OMP_NUM_THREADS=1 $swinssl finetune --out "$work/organs" --data "$work/organ-data" --classes "${organs[@]}" --name demo-organs \
    --init "$work/organs-stage1" --crop-sampling classes --spacing 3 3 3 --roi 64 --feature-size 12 --batch-size 2 --lr 1e-3 \
    --warmup-steps 10 --steps 500 --val-every 100 --checkpoint-every 50

# 3. Store both in float16 (half the size; the demo loads them into float32 networks).
.venv/bin/python - "$work" <<'EOF'
import json, shutil, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from swinssl.weights import provenance

work, resources = Path(sys.argv[1]), Path("swinssl/resources")
(resources / "demo_ssl").mkdir(exist_ok=True)
checkpoint = torch.load(work / "ssl" / "checkpoint.pt", map_location="cpu", weights_only=True)
model = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in checkpoint["model"].items()}
save_file(model, resources / "demo_ssl" / "model.safetensors", metadata={"format": "swinssl-pretrain-model", **provenance("v1.5")})
shutil.copy(work / "ssl" / "config.json", resources / "demo_ssl" / "config.json")
organs = resources / "demo_organs"
organs.mkdir(exist_ok=True)
weights = load_file(str(work / "organs" / "model.safetensors"))
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}, organs / "model.safetensors",
          metadata={"format": "swinssl-model/1", **provenance("v1.5")})
meta = json.loads((work / "organs" / "model.json").read_text())
meta["description"] = "Demo only: six organs learnt from one CT (the demo CT) and its TotalSegmentator pseudo-labels; see ATTRIBUTION.md"
meta["training"] = {k: v for k, v in meta["training"].items() if k not in ("case_names", "init")}
(organs / "model.json").write_text(json.dumps(meta, indent=2))
print("stored", resources / "demo_ssl", organs)
EOF
