#!/usr/bin/env bash
# GPU checks, one prepared script for a lent GPU machine (README "Benchmarks"), ~6 minutes:
#   1. smoke: the training job's GPU path on the tiny preset: FSDP2 bf16, compiled layers,
#      varlen attention, async checkpoint mid-run, consolidation, reload (decides --compile for 2)
#   2. throughput: our loop vs a stock HF Trainer on a Llama with LLaMA-7B's layer shapes,
#      one process each side, 3 repeats, MFU (bench/throughput.py --size 7b-shape)
#   3. the 7B recipe on 8x A100-80GB projected from 2's measured MFU (alpaca-jobs cost estimate)
# Uses the machine's own torch/transformers; wheels it lacks (pydantic, submitit) in .whl/.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
LAYERS=${LAYERS:-6}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 ALPACA_JOBS_CACHE=/tmp/aj-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

echo "== 1. smoke: tiny preset, FSDP2 bf16, compile, varlen, async checkpoint at step 3, consolidate"
SMOKE=/tmp/gpu-runs/smoke
timeout 120 python3 -m torch.distributed.run --standalone --nproc-per-node=1 -m alpaca_jobs.runtime \
  --spec jobs/train.yaml --run-dir $SMOKE --set resources.gpus_per_node=1 --set resources.gpu_type=h200 \
  --set cost.gpu_hour_usd=0 --set train.base_model=preset:tiny-llama --set train.data=seeds/seed_tasks.jsonl \
  --set train.max_steps=6 --set train.checkpoint_every_steps=3 --set train.global_batch_size=16 \
  --set train.learning_rate=1.0e-3 >"$OUT/smoke.log" 2>&1
SMOKE_RC=$?
COMPILE=auto
if [ $SMOKE_RC -ne 0 ]; then
  echo "smoke FAILED (rc $SMOKE_RC): the throughput bench runs without compile"; tail -25 "$OUT/smoke.log"
  COMPILE=off
else
  cp $SMOKE/run.json "$OUT/smoke-run.json"
  python3 - <<'EOF'
import json
from transformers import AutoModelForCausalLM
r = json.load(open("/tmp/gpu-runs/smoke/run.json"))
print("smoke:", r["status"], "steps", r["steps"], "attention", r["results"]["attention"], "compiled",
      r["results"]["compiled"], "checkpoint s", r["checkpoint_seconds"], "loss", round(r["first_loss"], 3),
      "->", round(r["final_loss"], 3))
print("checkpoint:", open("/tmp/gpu-runs/smoke/checkpoints/latest").read())
m = AutoModelForCausalLM.from_pretrained("/tmp/gpu-runs/smoke/model")
print("consolidated model reloads:", type(m).__name__, m.dtype, sum(p.numel() for p in m.parameters()))
EOF
fi

echo "== 2. throughput vs HF Trainer, 7B layer shapes x $LAYERS layers, bf16 (compile: $COMPILE)"
timeout 330 python3 bench/throughput.py --size 7b-shape --layers "$LAYERS" --attention auto --compile $COMPILE \
  --steps 8 --repeats 3 --timeout 200 --workdir /tmp/tp 2>"$OUT/throughput.err" | tee "$OUT/throughput.txt"
tail -5 "$OUT/throughput.err"
cp /tmp/tp/runs/ours-p1-r0/run.json "$OUT/ours-run.json" 2>/dev/null
cp /tmp/tp/runs/ours-p1-r0/metrics.jsonl "$OUT/ours-metrics.jsonl" 2>/dev/null

echo "== 3. the 7B recipe on 8x A100-80GB from the measured MFU"
if [ -f "$OUT/ours-run.json" ]; then
  python3 -m alpaca_jobs cost estimate --record "$OUT/ours-run.json" | tee "$OUT/estimate.txt"
fi
