"""Training throughput: our loop (packed, FSDP2) against a stock Hugging Face Trainer (padded),
measured in the same run, on the same data, model, precision, attention kernels and processes.

    python bench/throughput.py                        # CPU (2 cores): 1 and 2 processes, < 8 min
    python bench/throughput.py --steps 6 --repeats 1  # a quick check that it runs end to end
    python bench/throughput.py --size 7b-shape --layers 4   # GPU (one H200): bf16, MFU printed

Printed per configuration: median target tokens/s (tokens that carry loss, the work both sides
must do) of ours and of the Trainer, their ratio, the spread over repeats, and computed tokens
per target token (padding and packing overhead) of each side; on a GPU also MFU.

What runs (each run a fresh subprocess, so process start and model loading are outside the
per-step times on both sides):
- ours: ``python -m torch.distributed.run --standalone --nproc-per-node=P -m
  alpaca_jobs.runtime --spec SPEC --run-dir RUN_DIR --backend bench --set ...`` (SPEC: jobs/train-local.yaml
  on CPU, jobs/train.yaml on a GPU), FSDP2 over gloo (CPU) or NCCL, packed rows.
- Trainer: ``bench/trainer_side.py`` with the same spec and overrides, i.e.
  ``bench/reference.py``'s ``trainer_losses``: padded micro-batches of 4 per process,
  accumulation = global batch / (4 x P); one plain process for P=1, and under
  ``torch.distributed.run --nproc-per-node=2`` its own DDP (gloo on CPU) for P=2 (checked:
  world size 2, parallel mode distributed, identical gradients on both processes at step 1).

Fairness conditions:
- same processes and threads: P=1: one process, OMP_NUM_THREADS=2 (resources.cpus_per_process=2);
  P=2: two processes, OMP_NUM_THREADS=1 each. On a GPU, one process per GPU on both sides.
- same data, same order: the Alpaca-like file of bench/alpaca_like.py (log-normal lengths, real
  words; its measured length stats are printed); the Trainer's sampler replays our plan's epoch
  permutation, and under DDP accelerate gives each process every other micro-batch of it, so each
  optimizer step covers the same global batch on both sides (checked: per-step target tokens
  are compared step by step and printed as a match or not).
- same global batch: 16 examples per process per step (the 7B recipe's per-GPU share, 128 / 8);
  the Trainer's micro-batch is the recipe's 4, ours packs each process's share into rows of at
  most train.tokens_per_micro_step tokens (the spec's value); max_length 512.
- same precision: fp32 on CPU; on a GPU bf16 (Trainer bf16=True, autocast over fp32 weights;
  ours the layout's bf16 parameters over fp32 master weights). AdamW: fused on a GPU on both
  sides (the Trainer's own default there), the plain one on CPU on both.
- same attention kernels: PyTorch SDPA on both sides: the Trainer with attn_implementation="sdpa"
  on padded batches, ours with layout.attention=per_sequence (one causal SDPA call per packed
  document) and no torch.compile (the stock Trainer does not compile); ``--attention auto``
  measures our layout's own choice instead (varlen FlashAttention + compile on a GPU).
- the Trainer not hobbled: ddp_find_unused_parameters=False under DDP (every parameter is used;
  its default, True, costs DDP a walk of the autograd graph each step).
- timing per optimizer step, wall clock: ours from metrics.jsonl's ``step_seconds``; the
  Trainer from a callback, on_step_end to on_step_end (the same loop period: data, step,
  logging; CUDA synchronised); its on_step_begin..on_step_end body alone is printed too. The
  first --warmup (3) steps of every run are dropped; per run the median over steps of
  target tokens / step seconds; then the median over --repeats (>= 3) runs per side, the
  sides interleaved (ours, Trainer, ours, Trainer, ...).
- MFU (GPU): model FLOPs = 6 N tokens + 12 L d sum(len^2) over real (unpadded) tokens, as
  the train job's record holds it, over the timed steps, against the dense bf16 peak of
  alpaca_jobs.ops.prices.peak_flops for the device (H200: 989 TFLOP/s) times processes; ours'
  run.json ``mfu`` (all steps, warm-up included) is printed beside it.

Models: random Llamas. CPU: hidden 256, 4 layers, intermediate 1024, 4 heads, the tiny
preset's BPE vocabulary (2048 + pad) trained on the data: 5.2M parameters, ~2.2-3.5K real
tokens per step and process, so matmuls dominate a step (0.5-1 s on 2 cores; profiled:
backward and linear layers take ~80% of the Trainer's time) rather than Python overhead, and
the whole bench (12 runs of 3 + 5 steps) takes about 5 minutes on a quiet machine (estimated
from a one-repeat run, 106 s), under the 8-minute target.
GPU (--size 7b-shape): LLaMA-7B's layer shape (hidden 4096, intermediate 11008, 32 heads, 32
KV heads, vocab 32000) with --layers decoder layers (4: 1.07B parameters), saved in bf16 and
loaded as fp32 by both sides; the tokenizer is the tiny preset's, the embedding has 32000 rows
(build_tiny_llama takes the vocabulary size from its tokenizer, so this model is built here).
Ours runs jobs/train.yaml with resources.gpus_per_node=1, gpu_type=h200 and, while the price
table has no h200, cost.gpu_hour_usd=0; 3 warm-up + 10 timed steps, 3 repeats by default.
Everything is local (HF_HUB_OFFLINE=1); --workdir DIR keeps the data, model, run dirs and logs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CPU_SHAPE = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024)
SHAPE_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                num_key_value_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-5,
                tie_word_embeddings=False)
VOCAB_7B = 32000
PER_PROCESS_BATCH = 16  # the 7B recipe's per-GPU share of its global batch: 128 / 8
MICRO_BATCH = 4  # the recipe's per-GPU micro-batch (the Trainer's)


@dataclass
class Step:
    seconds: float
    targets: int
    tokens: int  # computed by the model (padding included)
    real_tokens: int | None = None
    seq_sq_sum: float | None = None
    body: float | None = None  # Trainer: on_step_begin..on_step_end


@dataclass
class SideRun:
    side: str
    steps: list[Step]
    info: dict[str, Any] = field(default_factory=dict)

    def timed(self, warmup: int) -> list[Step]:
        return self.steps[warmup:]

    def rate(self, warmup: int) -> float:
        """Median over timed steps of target tokens per second."""
        return statistics.median(s.targets / s.seconds for s in self.timed(warmup))

    def body_rate(self, warmup: int) -> float | None:
        if any(s.body is None for s in self.timed(warmup)):
            return None
        return statistics.median(s.targets / s.body for s in self.timed(warmup))

    def tokens_per_target(self, warmup: int) -> float:
        t = self.timed(warmup)
        return sum(s.tokens for s in t) / sum(s.targets for s in t)


@dataclass
class Setup:
    spec: str
    base: Path
    data: Path
    tmp: Path
    layout: Path
    gpu: bool
    args: argparse.Namespace


# --- building ------------------------------------------------------------------------------


def build_model(tmp: Path, data: Path, size: str, layers: int, gpu: bool) -> Path:
    """A random Llama and its tokenizer (trained on ``data``), saved as a HF directory."""
    from alpaca_jobs.model_dirs import build_tiny_llama

    out = tmp / "model"
    if size == "cpu":
        build_tiny_llama(out, [str(data)], **CPU_SHAPE)
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from alpaca_jobs.train.models import PAD_TOKEN

    tiny = tmp / "tokenizer"  # only its tokenizer is used: the tiny preset's, trained on the data
    build_tiny_llama(tiny, [str(data)], hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2)
    tok = AutoTokenizer.from_pretrained(tiny)
    tok.add_special_tokens({"pad_token": PAD_TOKEN})  # inside the 32000 rows: nobody resizes
    cfg = LlamaConfig(vocab_size=VOCAB_7B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, num_hidden_layers=layers, **SHAPE_7B)
    torch.manual_seed(0)
    with torch.device("cuda" if gpu else "cpu"):
        model = LlamaForCausalLM(cfg)
    model.to(torch.bfloat16).save_pretrained(out)  # both sides load it as fp32
    tok.save_pretrained(out)
    del model
    if gpu:
        torch.cuda.empty_cache()
    return out


def write_layout(spec: str, tmp: Path, attention: str, compile_: str) -> Path:
    """The spec's layout with our attention and compile choices, for ``--set layout=``."""
    import yaml

    spec_path = ROOT / spec
    layout_rel = yaml.safe_load(spec_path.read_text())["layout"]
    layout = yaml.safe_load((spec_path.parent / layout_rel).read_text())
    layout["attention"] = attention
    layout["compile"] = {"on": True, "off": False}.get(compile_, "auto")
    out = tmp / "layout.yaml"
    out.write_text(yaml.safe_dump(layout))
    return out


def gpu_resources(processes: int, threads: int) -> list[str]:
    from alpaca_jobs.ops.prices import GPU_PRICES

    sets = [f"resources.gpus_per_node={processes}", "resources.gpu_type=h200",
            f"resources.cpus_per_process={threads}"]
    if "h200" not in GPU_PRICES:
        sets.append("cost.gpu_hour_usd=0")
    return sets


def overrides(s: Setup, processes: int, threads: int, total_steps: int, examples: int) -> list[str]:
    """The same spec overrides for both sides."""
    global_batch = PER_PROCESS_BATCH * processes
    epochs = -(-total_steps * global_batch // examples)  # enough epochs for total_steps
    sets = [f"runs_dir={s.tmp / 'runs'}", f"layout={s.layout}", f"train.base_model={s.base}",
            f"train.data={s.data}", f"train.max_steps={total_steps}", f"train.epochs={epochs}",
            f"train.global_batch_size={global_batch}", f"train.micro_batch_size={MICRO_BATCH}",
            "train.max_length=512", f"train.checkpoint_every_steps={total_steps + 1}"]
    if s.gpu:
        return sets + gpu_resources(processes, threads)
    return sets + [f"resources.processes_per_node={processes}", f"resources.cpus_per_process={threads}"]


# --- running -------------------------------------------------------------------------------


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": str(ROOT)}


def _launch(processes: int, torchrun: bool) -> list[str]:
    if not torchrun:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]


def _run(cmd: list[str], threads: int, log: Path, timeout: float) -> None:
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(threads), stdout=fh, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    if proc.returncode:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n--- last lines of {log}:\n{tail}")


def run_ours(s: Setup, sets: list[str], processes: int, threads: int, name: str) -> SideRun:
    run_dir = s.tmp / "runs" / name
    cmd = _launch(processes, True) + ["-m", "alpaca_jobs.runtime", "--spec", s.spec, "--run-dir",
                                      str(run_dir), "--backend", "bench"]
    for x in sets:
        cmd += ["--set", x]
    _run(cmd, threads, s.tmp / f"{name}.log", s.args.timeout)
    record = json.loads((run_dir / "run.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    fallback = None
    if any("step_seconds" not in r for r in rows):
        fallback = record["train_loop_seconds"] / max(record["steps"], 1)
    steps = [Step(r.get("step_seconds", fallback), r["targets"], r["tokens"], r.get("real_tokens"))
             for r in rows]
    results = record.get("results") or {}
    info = {"mfu_run_json": record.get("mfu"), "fallback_seconds": fallback,
            "attention": results.get("attention"), "compiled": results.get("compiled"),
            "micro_steps": statistics.median(r.get("micro_steps", 0) for r in rows)}
    return SideRun("ours", steps, info)


def run_trainer(s: Setup, sets: list[str], processes: int, threads: int, name: str) -> SideRun:
    out = s.tmp / name
    cmd = _launch(processes, processes > 1) + [str(ROOT / "bench" / "trainer_side.py"), s.spec, str(out)]
    for x in sets:
        cmd += ["--set", x]
    _run(cmd, threads, s.tmp / f"{name}.log", s.args.timeout)
    ranks = [json.loads(out.with_name(f"{out.name}.rank{r}.json").read_text()) for r in range(processes)]
    steps = []
    for per_rank in zip(*(r["steps"] for r in ranks), strict=True):
        steps.append(Step(max(x["period"] for x in per_rank), sum(x["targets"] for x in per_rank),
                          sum(x["tokens"] for x in per_rank), sum(x["real_tokens"] for x in per_rank),
                          sum(x["seq_sq_sum"] for x in per_rank), max(x["body"] for x in per_rank)))
    info = {k: ranks[0].get(k) for k in ("world", "world_size", "parallel_mode", "backend", "attention",
                                          "accumulation", "threads", "num_params", "layers", "hidden",
                                          "device_name", "grad_checksums", "bf16")}
    return SideRun("Trainer", steps, info)


# --- summarising ---------------------------------------------------------------------------


def mfu(run: SideRun, flops: list[float], warmup: int, peak: float, processes: int) -> float:
    """Median over timed steps of model FLOPs / (seconds x peak x processes)."""
    return statistics.median(f / (st.seconds * peak * processes)
                             for f, st in zip(flops[warmup:], run.timed(warmup), strict=True))


def step_flops(trainer: SideRun) -> list[float]:
    """Model FLOPs per step (worker.py's formula) from the Trainer's real tokens per step."""
    n, layers, d = (trainer.info[k] for k in ("num_params", "layers", "hidden"))
    return [6 * n * st.real_tokens + 12 * layers * d * st.seq_sq_sum for st in trainer.steps]


def _spread(xs: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(min(xs))}-{fmt.format(max(xs))}"


def summarize(processes: int, pairs: list[tuple[SideRun, SideRun]], s: Setup) -> list[str]:
    w = s.args.warmup
    ours = [o.rate(w) for o, _ in pairs]
    theirs = [t.rate(w) for _, t in pairs]
    bodies = [t.body_rate(w) for _, t in pairs]
    ratios = [o / t for o, t in zip(ours, theirs, strict=True)]
    o_med, t_med = statistics.median(ours), statistics.median(theirs)
    label = f"{processes} process{'es' if processes > 1 else ''}"
    o_tpt = statistics.median(o.tokens_per_target(w) for o, _ in pairs)
    t_tpt = statistics.median(t.tokens_per_target(w) for _, t in pairs)
    lines = [f"{label}: ours {o_med:,.0f} tok/s, Trainer {t_med:,.0f} tok/s, ours/Trainer "
             f"{o_med / t_med:.2f}x (spread over {len(pairs)} repeats: ours {_spread(ours)}, "
             f"Trainer {_spread(theirs)}, ratio {_spread(ratios, '{:.2f}')}x); "
             f"tokens/target: ours {o_tpt:.3f}, Trainer {t_tpt:.3f}",
             # Each repeat runs ours then the Trainer back to back: their ratio shares the
             # machine's state of the moment, so its median is less at the mercy of load drift.
             f"    paired: median over repeats of (ours / Trainer) run back to back "
             f"{statistics.median(ratios):.2f}x"]
    o0, t0 = pairs[0]
    same = all(a.targets == b.targets for a, b in zip(o0.steps, t0.steps, strict=False)) \
        and len(o0.steps) == len(t0.steps)
    secs = statistics.median(st.seconds for o, _ in pairs for st in o.timed(w))
    t_secs = statistics.median(st.seconds for _, t in pairs for st in t.timed(w))
    lines.append(f"    ours: attention {o0.info['attention']}, compiled {o0.info['compiled']}, "
                 f"{o0.info['micro_steps']:g} packed micro-step(s) per step, median step {secs:.3f} s | "
                 f"Trainer: attention {t0.info['attention']}, {t0.info['accumulation']} x micro-batch "
                 f"{MICRO_BATCH} per process, {t0.info['threads']} thread(s), median step {t_secs:.3f} s "
                 f"(on_step_begin..end only: {statistics.median(b for b in bodies if b):,.0f} tok/s)")
    lines.append(f"    same examples per step on both sides (target tokens step by step): "
                 f"{'yes' if same else 'NO'}; Trainer parallel mode {t0.info['parallel_mode']}, "
                 f"world size {t0.info['world_size']}, backend {t0.info['backend']}"
                 + (_ddp_check(t0) if processes > 1 else ""))
    if any(o.info["fallback_seconds"] is not None for o, _ in pairs):
        lines.append("    WARNING: ours' metrics.jsonl has no step_seconds: every step is timed as "
                     "train_loop_seconds / steps (warm-up included, not per step)")
    lines += _odd_steps(pairs, w)
    if s.gpu:
        lines.append(_mfu_line(pairs, s, processes, same))
    return lines


def _ddp_check(t: SideRun) -> str:
    sums = t.info.get("grad_checksums")
    if not sums:
        return "; DDP gradient check: not recorded"
    equal = max(sums) - min(sums) <= 1e-9 * max(1.0, max(abs(x) for x in sums))
    return f"; gradients identical on all {len(sums)} processes at step 1: {'yes (DDP)' if equal else 'NO'}"


def _odd_steps(pairs: list[tuple[SideRun, SideRun]], warmup: int) -> list[str]:
    """Flag timed steps of ours far shorter than the run's median (a misattributed time)."""
    out = []
    for i, (o, _) in enumerate(pairs):
        t = [st.seconds for st in o.timed(warmup)]
        med = statistics.median(t)
        odd = [warmup + 1 + k for k, x in enumerate(t) if x < 0.3 * med]
        if odd:
            out.append(f"    WARNING: repeat {i + 1}: ours' step_seconds of step(s) {odd} are < 30% of "
                       f"the median {med:.3f} s (step times misattributed?)")
    return out


def _mfu_line(pairs: list[tuple[SideRun, SideRun]], s: Setup, processes: int, same: bool) -> str:
    from alpaca_jobs.ops.prices import peak_flops

    name = pairs[0][1].info["device_name"]
    peak = peak_flops(name)
    if not peak:
        return f"    MFU: no peak known for {name!r} (alpaca_jobs.ops.prices.PEAK_BF16_FLOPS)"
    w = s.args.warmup
    t_mfu = statistics.median(mfu(t, step_flops(t), w, peak, processes) for _, t in pairs)
    o_json = [o.info["mfu_run_json"] for o, _ in pairs if o.info["mfu_run_json"] is not None]
    o_part = "n/a (steps differ)"
    if same:
        o_part = f"{statistics.median(mfu(o, step_flops(t), w, peak, processes) for o, t in pairs):.1%}"
    json_part = f"{statistics.median(o_json):.1%}" if o_json else "n/a"
    return (f"    MFU (timed steps, dense bf16 peak {peak / 1e12:.0f} TFLOP/s x {processes}, {name}): "
            f"ours {o_part}, Trainer {t_mfu:.1%}; ours' run.json mfu (all steps) {json_part}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- main ----------------------------------------------------------------------------------


def parse_args(gpu: bool) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", choices=["1", "2", "both"], default=None,
                    help="default: both on CPU, 1 on a GPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per run (default: 5 CPU, 10 GPU)")
    ap.add_argument("--warmup", type=int, default=3, help="steps dropped at the start of every run")
    ap.add_argument("--size", choices=["cpu", "7b-shape"], default="7b-shape" if gpu else "cpu")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers of --size 7b-shape")
    ap.add_argument("--attention", choices=["per_sequence", "auto", "varlen", "flex"], default="per_sequence",
                    help="ours' layout.attention (per_sequence: SDPA per document, as the Trainer's SDPA)")
    ap.add_argument("--compile", choices=["off", "on", "auto"], default=None,
                    help="ours' layout.compile (default: off with per_sequence, else auto)")
    ap.add_argument("--examples", type=int, default=4000, help="size of the Alpaca-like data set")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per training run")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep data, model, run dirs and logs here (default: a temporary dir, removed)")
    args = ap.parse_args()
    args.steps = args.steps or (10 if gpu else 5)
    args.compile = args.compile or ("off" if args.attention == "per_sequence" else "auto")
    if args.repeats < 3:
        print(f"note: --repeats {args.repeats} < 3: a smoke run, not a measurement", file=sys.stderr)
    return args


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a network
    import torch

    gpu = torch.cuda.is_available()
    args = parse_args(gpu)
    default = ["1"] if gpu else ["1", "2"]
    configs = [int(p) for p in (default if args.processes is None else
                                ["1", "2"] if args.processes == "both" else [args.processes])]
    spec = "jobs/train.yaml" if gpu else "jobs/train-local.yaml"
    import alpaca_like
    from transformers import AutoTokenizer

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp_name:
        tmp = args.workdir or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        data = tmp / "alpaca_like.json"
        alpaca_like.write(data, args.examples)
        base = build_model(tmp, data, args.size, args.layers, gpu)
        stats = alpaca_like.measure(data, AutoTokenizer.from_pretrained(base))
        s = Setup(spec, base, data, tmp, write_layout(spec, tmp, args.attention, args.compile), gpu, args)
        device = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
        shape = CPU_SHAPE if args.size == "cpu" else {**SHAPE_7B, "num_hidden_layers": args.layers}
        print(f"device: {device}; torch {torch.__version__}; model: random Llama {args.size} "
              f"(hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, intermediate "
              f"{shape['intermediate_size']}, {shape['num_attention_heads']} heads); "
              f"{'bf16' if gpu else 'fp32'}; {PER_PROCESS_BATCH} examples per process per step; "
              f"{args.warmup} warm-up + {args.steps} timed steps per run, {args.repeats} repeat(s)")
        print(f"load average at the start: {_load()} (other work on the machine skews both sides)")
        print("\n".join(stats.lines()))
        total = args.warmup + args.steps
        for processes in configs:
            if gpu and processes > torch.cuda.device_count():
                print(f"{processes} processes: skipped, {torch.cuda.device_count()} GPU(s) here")
                continue
            threads = (max(1, min(8, (os.cpu_count() or 2) // processes)) if gpu
                       else max(1, (os.cpu_count() or 2) // processes))
            sets = overrides(s, processes, threads, total, stats.examples)
            pairs = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                o = run_ours(s, sets, processes, threads, f"ours-p{processes}-r{r}")
                t = run_trainer(s, sets, processes, threads, f"trainer-p{processes}-r{r}")
                pairs.append((o, t))
                print(f"  [{processes} proc, repeat {r + 1}/{args.repeats}] ours {o.rate(args.warmup):,.0f}, "
                      f"Trainer {t.rate(args.warmup):,.0f} target tok/s ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
            print("\n".join(summarize(processes, pairs, s)), flush=True)
    print(f"(whole bench: {time.perf_counter() - t_start:.0f} s; load average at the end: {_load()})")


if __name__ == "__main__":
    main()
