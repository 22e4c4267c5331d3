import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alpaca_jobs.ops.estimate import estimate
from alpaca_jobs.ops.present import format_report
from alpaca_jobs.ops.record import Usage, cost_fields
from alpaca_jobs.ops.usage import read_usage
from tests.conftest import ROOT, cli, run_record


def test_help_is_fast_and_imports_no_heavy_library():
    code = (
        "import sys, time; t=time.perf_counter(); from alpaca_jobs.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','transformers','accelerate','kubernetes','submitit') if m in sys.modules]\n"
        "print('HEAVY', heavy, time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    line = out.strip().splitlines()[-1]
    assert line.startswith("HEAVY [] "), line
    assert float(line.split()[-1]) < 1.0
    for sub in ("submit", "status", "logs", "cancel", "cost", "spec", "models"):
        assert sub in out


def test_submit_and_status_paths_import_no_torch(tmp_path):
    code = (
        "import sys\nfrom alpaca_jobs.cli import main\n"
        f"try:\n    main(['submit', '{ROOT}/jobs/train-local.yaml', '--dry-run'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH', 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.strip().endswith("TORCH False")


def test_dry_run_prints_the_exact_submission_and_submits_nothing(tmp_path):
    proc = cli("submit", "jobs/train-local.yaml", "--dry-run", "--set", f"runs_dir={tmp_path}", "--run-id", "r1")
    assert proc.returncode == 0, proc.stderr
    assert "executor: submitit.LocalExecutor" in proc.stdout
    assert "tasks_per_node: 2" in proc.stdout and "function: alpaca_jobs.runtime:run_payload (alpaca_jobs.train.worker:train_body)" in proc.stdout
    assert not (tmp_path / "r1").exists()


def test_make_dry_run_uses_the_local_spec_by_default(tmp_path):
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip("make's venv marker is absent (tests run outside `make test`)")
    proc = subprocess.run(["make", "-s", "submit-train", "DRY_RUN=1", f"VENV={venv}",
                           f"SETS=runs_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "jobs/train-local.yaml" in proc.stdout and "nothing submitted" in proc.stdout
    assert not any(tmp_path.iterdir())
    proc = subprocess.run(["make", "-s", "submit-train", "DRY_RUN=1", "CLUSTER=slurm", f"VENV={venv}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "slurm submission of jobs/train.yaml" in proc.stdout
    assert "#SBATCH --gpus-per-node=8" in proc.stdout
    proc = subprocess.run(["make", "-s", "submit-train", "DRY_RUN=1", "CLUSTER=k8s", f"VENV={venv}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "k8s submission of jobs/train.yaml" in proc.stdout
    assert "kind: Job" in proc.stdout and "nvidia.com/gpu: '8'" in proc.stdout


def test_spec_errors_are_one_clean_line(tmp_path):
    proc = cli("submit", "jobs/train.yaml", "--set", "train.epochs=-1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: jobs/train.yaml: train.epochs: Input should be greater than or equal to 1")
    assert "Traceback" not in proc.stderr
    proc = cli("submit", "nope.yaml")
    assert proc.returncode == 2 and "nope.yaml: no such file" in proc.stderr


def test_local_gpu_job_on_a_machine_without_gpus_is_refused(tmp_path):
    proc = cli("submit", "jobs/train.yaml", "--set", f"runs_dir={tmp_path}")
    assert proc.returncode == 2 and "no NVIDIA GPU" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_spec_check_prints_derived_values():
    proc = cli("spec", "check", "jobs/train.yaml", "--set", "resources.nodes=2")
    assert proc.returncode == 0, proc.stderr
    assert "grad_accum_steps: 2" in proc.stdout and "processes: 16" in proc.stdout
    assert "memory_per_gpu: '6.74B (train.model_size: 7b) on 16 GPUs, hybrid shard over 8" in proc.stdout


def test_unknown_run_is_a_clear_error(tmp_path):
    proc = cli("status", "nope", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "no run 'nope'" in proc.stderr


def test_cost_is_gpu_seconds_times_price():
    f = cost_fields(Usage(attempts=2, wall_seconds=3 * 3600, cpu_seconds=7200), nodes=1, gpus_per_node=8,
                    gpu_price=3.43, cpu_core_hour_usd=0.0, target_usd=100)
    assert f["gpu_hours"] == 24 and f["cost_usd"] == pytest.approx(82.32) and f["target_met"] is True
    f = cost_fields(Usage(1, 3600, 7200), 1, 0, 0.0, cpu_core_hour_usd=0.05, target_usd=None)
    assert f["gpu_hours"] == 0 and f["cpu_hours"] == 2 and f["cost_usd"] == pytest.approx(0.1)
    assert f["target_met"] is None


def test_usage_sums_attempts_and_takes_the_slowest_process(tmp_path):
    u = tmp_path / "usage"
    u.mkdir()
    rows = [("a", 0, 10, 9), ("a", 1, 12, 11), ("b", 0, 5, 4), ("b", 1, 4, 4)]
    for att, rank, wall, cpu in rows:
        (u / f"{att}-rank{rank}.json").write_text(json.dumps(
            {"attempt": att, "rank": rank, "wall_seconds": wall, "cpu_seconds": cpu}))
    assert read_usage(tmp_path) == Usage(attempts=2, wall_seconds=17, cpu_seconds=28)


def test_report_formats_a_record():
    rec = run_record(run_id="r", job="train", backend="local", status="completed", nodes=1, gpus_per_node=8,
               gpu_type="a100-80gb", processes=8, device="cuda:0", attempts=1, wall_seconds=10800,
               gpu_hours=24, cpu_hours=1, price_per_gpu_hour_usd=3.43, price_source="src", cost_usd=82.32,
               target_usd=100, target_met=True, steps=1, total_steps=1, first_loss=1.5, final_loss=1.0,
               tokens_trained=10, target_tokens_trained=5, tokens_per_second=1.0, train_loop_seconds=10,
               mfu=0.45, data={}, model_dir="/m")
    text = format_report(rec)
    assert "$100.00 -> MET" in text and "MFU         45.0%" in text and "(10800.0 s x 8 GPUs)" in text


def test_cost_estimate_formula():
    est = estimate(gpus=8, price=3.43, epochs=3, examples=52002, mean_tokens=200, tokens_per_second=3000)
    assert est.tokens == 52002 * 3 * 200
    assert est.hours == pytest.approx(est.tokens / 3000 / 3600)
    assert est.cost_usd == pytest.approx(est.hours * 8 * 3.43)
    by_mfu = estimate(gpus=8, price=3.43, epochs=3, examples=52002, mean_tokens=200, mfu=0.4)
    fpt = 6 * (6.74e9 - 32000 * 4096) + 12 * 32 * 4096 * 200  # the input embedding is a lookup
    assert by_mfu.tokens_per_second == pytest.approx(0.4 * 312e12 * 8 / fpt)


def test_cost_estimate_cli_shows_its_formula(tmp_path):
    proc = cli("cost", "estimate", "--mfu", "0.4")
    assert proc.returncode == 0, proc.stderr
    assert "FLOPs/token = 6 x" in proc.stdout and "GPU-hours   =" in proc.stdout and "target $100.00" in proc.stdout
    rec = tmp_path / "run.json"
    rec.write_text(run_record(mfu=None, data={"kept": 2, "prompt_tokens": 100, "target_tokens": 100}).to_json())
    proc = cli("cost", "estimate", "--record", str(rec))
    assert proc.returncode == 2 and "no MFU in this record" in proc.stderr
    proc = cli("cost", "estimate", "--record", str(rec), "--tokens-per-second", "5000")
    assert proc.returncode == 0 and "x 100.0 tokens" in proc.stdout
    # A file that is not a run record: one line naming it and the field, no traceback.
    for text, needle in (('{"mfu": 0.4}', "run_id: required field is missing"),
                         (run_record().to_json().replace('"nodes": 1', '"nodes": "two"'), "nodes: Input should be"),
                         ("[1, 2]", "not a run record"), ("{not json", "not JSON")):
        rec.write_text(text)
        proc = cli("cost", "estimate", "--record", str(rec))
        assert proc.returncode == 2 and f"{rec}: " in proc.stderr and needle in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    rec.write_bytes(b"\xff\xfe{")
    proc = cli("cost", "estimate", "--record", str(rec))
    assert proc.returncode == 2 and "cannot read it" in proc.stderr and "Traceback" not in proc.stderr
    t = time.perf_counter()
    assert cli("cost", "estimate", "--gpu-type", "tpu", "--mfu", "0.3").returncode == 2
    for bad in (["--mfu", "1.5"], ["--mfu", "-1"], ["--mfu", "0.4", "--gpus", "0"]):
        proc = cli("cost", "estimate", *bad)
        assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr, bad
    assert time.perf_counter() - t < 30


def test_cost_estimate_carries_a_measured_mfu_across_gpus(tmp_path):
    """An H200 run's steady-state MFU projects the A100 node at the same share of its peak."""
    rec = tmp_path / "run.json"
    rec.write_text(run_record(mfu=0.05, device="cuda:0",
                              results={"mfu_after_warmup": 0.5, "device_name": "NVIDIA H200"},
                              data={"kept": 2, "prompt_tokens": 100, "target_tokens": 100}).to_json())
    proc = cli("cost", "estimate", "--record", str(rec))
    assert proc.returncode == 0, proc.stderr
    assert "MFU 0.500 measured on NVIDIA H200 (after warm-up" in proc.stdout
    assert "tokens/s scale by 0.315" in proc.stdout and "communication assumed overlapped" in proc.stdout
    fpt = 6 * (6.74e9 - 32000 * 4096) + 12 * 32 * 4096 * 100
    assert f"= {0.5 * 312e12 * 8 / fpt:,.0f}" in proc.stdout


@pytest.mark.parametrize("bad", ["../../etc/x", "a/b", "..", ".hidden", "x" * 129, "sp ace", "semi;colon"])
def test_run_ids_cannot_point_outside_the_runs_dir(tmp_path, bad):
    proc = cli("submit", "jobs/train-local.yaml", "--run-id", bad, "--dry-run", "--set", f"runs_dir={tmp_path}")
    assert proc.returncode == 2 and "--run-id" in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())
    ok = cli("submit", "jobs/train-local.yaml", "--run-id", "alpaca-7b_v2.1", "--dry-run", "--set", f"runs_dir={tmp_path}")
    assert ok.returncode == 0, ok.stderr


def test_dry_run_checks_the_data_and_empty_data_is_refused(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{broken\n')
    empty = tmp_path / "empty.json"
    empty.write_text('[{"instruction": "a", "output": "  "}]')
    for data, needle in ((broken, "broken.jsonl:2: not valid JSON"),
                         (empty, "no usable examples (train.data): 1 records, 1 with an empty output")):
        for cluster in ("local", "slurm", "k8s"):
            spec = "jobs/train-local.yaml" if cluster == "local" else "jobs/train.yaml"
            proc = cli("submit", spec, "--cluster", cluster, "--dry-run", "--set", f"train.data={data}")
            assert proc.returncode == 2 and needle in proc.stderr, (cluster, proc.stderr)
            assert "Traceback" not in proc.stderr and "nothing submitted" not in proc.stdout


def test_flags_export_of_a_file_that_is_not_sqlite_is_one_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 10)
    proc = cli("flags", "export", "--flags-db", str(notes))
    assert proc.returncode == 2 and "not a flags database" in proc.stderr and "Traceback" not in proc.stderr
    assert notes.read_text() == "not a database\n" * 10  # left as it was


def test_processes_that_adopt_rank_zeros_attempt_bill_one_attempt(tmp_path, monkeypatch):
    """Pods of a Kubernetes set start with ids of their own; once they share rank 0's, their
    rows are one attempt (and the rows under the old ids are gone)."""
    from alpaca_jobs.ops.usage import UsageMeter

    for var in ("ALPACA_JOBS_ATTEMPT", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "SUBMITIT_LOCAL_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    meters = [UsageMeter(tmp_path, rank=r) for r in (0, 1)]
    for m in meters:
        m.start()
    assert read_usage(tmp_path).attempts == 2  # two made-up ids: two attempts, wrongly
    meters[1].adopt(meters[0].attempt)
    assert read_usage(tmp_path).attempts == 1
    assert sorted(p.name for p in (tmp_path / "usage").iterdir()) == [
        f"{meters[0].attempt}-rank0.json", f"{meters[0].attempt}-rank1.json"]
