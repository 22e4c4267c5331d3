#!/usr/bin/env bash
# GPU checks, run on a lent GPU machine (see README "Benchmarks"):
#   1. the training job's GPU path (FSDP2 + bf16 through accelerate, checkpoint, consolidation)
#   2. throughput against HF Trainer on a ~1B random Llama, with MFU.
# Expects python3 with torch/transformers/accelerate; extra wheels (pydantic) in .whl/ if missing.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 ALPACA_JOBS_CACHE=/tmp/aj-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"

echo "== 1. GPU smoke: tiny preset, FSDP2 bf16, checkpoint every 2 steps, consolidate"
python3 -m torch.distributed.run --nproc-per-node=1 -m alpaca_jobs.train.worker jobs/train.yaml /tmp/gpu-runs/smoke \
  --set resources.gpus_per_node=1 --set train.base_model=preset:tiny-llama --set train.data=seeds/seed_tasks.jsonl \
  --set train.max_steps=4 --set train.checkpoint_every_steps=2 --set train.global_batch_size=16 \
  --set train.micro_batch_size=4 --set train.learning_rate=1.0e-3 2>&1 | tail -8
cp /tmp/gpu-runs/smoke/run.json "$OUT/smoke-run.json" 2>/dev/null
cat /tmp/gpu-runs/smoke/sharding/rank0.json; echo
ls /tmp/gpu-runs/smoke/checkpoints /tmp/gpu-runs/smoke/model
python3 -c "
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained('/tmp/gpu-runs/smoke/model'); t = AutoTokenizer.from_pretrained('/tmp/gpu-runs/smoke/model')
print('consolidated model reloads:', type(m).__name__, m.dtype, sum(p.numel() for p in m.parameters()))"

echo "== 2. throughput vs HF Trainer, ~1B random Llama, bf16"
python3 bench/throughput.py --size 1b --steps 12 --global-batch 64 --micro-batch 16 2>&1 | grep -v -E "step [0-9]+/|Warn" | tail -8 | tee "$OUT/bench.txt"
