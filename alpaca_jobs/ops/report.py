"""What ``alpaca-jobs report`` shows (``cli/costs.py``): GPU-hours and cost per run, per stage, per cluster and in total.

    alpaca-jobs report                          # the ledger beside ./runs, as a table
    alpaca-jobs report --scan runs/             # first import runs/*/run.json (older runs)
    alpaca-jobs report --png cost.png --html cost.html --json summary.json

Compute cost (GPU-hours and CPU-hours x price) and API spend (generate, evaluate) are kept
apart. Training runs are held to their own cost.target_usd, else Stanford's $100.
matplotlib is imported only for the PNG (and the HTML page holding it).
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alpaca_jobs.ops.record import RunRecord


@dataclass
class Totals:
    runs: int = 0
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    cost_usd: float = 0.0
    api_cost_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        return self.cost_usd + self.api_cost_usd

    def add(self, row: dict[str, Any]) -> None:
        self.runs += 1
        self.gpu_hours += row["gpu_hours"]
        self.cpu_hours += row["cpu_hours"]
        self.cost_usd += row["cost_usd"]
        self.api_cost_usd += row["api_cost_usd"]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_usd": self.total_usd}


@dataclass
class Summary:
    runs: list[dict[str, Any]]
    by_stage: dict[str, Totals] = field(default_factory=dict)
    by_cluster: dict[str, Totals] = field(default_factory=dict)
    total: Totals = field(default_factory=Totals)

    @property
    def training(self) -> list[dict[str, Any]]:
        """Runs held to a cost target (training runs: their kind's default is Stanford's $100)."""
        return [r for r in self.runs if r["target_usd"] is not None]

    def as_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "by_stage": {k: v.as_dict() for k, v in self.by_stage.items()},
                "by_cluster": {k: v.as_dict() for k, v in self.by_cluster.items()},
                "total": self.total.as_dict(), "training": self.training}


def run_row(rec: RunRecord) -> dict[str, Any]:
    """One run's line: who, where, GPU-hours, compute and API cost, and its target's verdict."""
    return {
        "run_id": rec.run_id, "stage": rec.job, "cluster": rec.backend,
        "gpu_type": rec.gpu_type or "-", "status": rec.status,
        "started_at": rec.started_at, "gpu_hours": rec.gpu_hours, "cpu_hours": rec.cpu_hours,
        "cost_usd": rec.cost_usd, "api_cost_usd": rec.api_cost_usd, "total_usd": rec.total_cost_usd,
        "target_usd": rec.target_usd,
        "target_met": None if rec.target_usd is None else rec.cost_usd <= rec.target_usd,
    }


def summarize(records: list[RunRecord]) -> Summary:
    rows = sorted((run_row(r) for r in records), key=lambda r: (r["started_at"], r["run_id"]))
    s = Summary(rows)
    from alpaca_jobs.common import kinds

    order = {name: i for i, name in enumerate(kinds.names())}
    for r in sorted(rows, key=lambda r: (order.get(r["stage"], len(order)), r["stage"])):
        s.by_stage.setdefault(r["stage"], Totals()).add(r)
    for r in sorted(rows, key=lambda r: r["cluster"]):
        s.by_cluster.setdefault(r["cluster"], Totals()).add(r)
        s.total.add(r)
    return s


def _usd(x: float) -> str:
    """Cents, and four decimals below a dollar (a CPU test run costs fractions of a cent)."""
    return f"${x:,.4f}" if 0 < abs(x) < 1 else f"${x:,.2f}"


def verdict(row: dict[str, Any]) -> str:
    if row["target_usd"] is None:
        return "-"
    return f"{'MET' if row['target_met'] else 'OVER'} {_usd(row['target_usd'])}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    right = [h in {"runs", "GPU-h", "compute", "API", "total"} for h in headers]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _totals_rows(groups: dict[str, Totals]) -> list[list[str]]:
    return [[k, str(t.runs), f"{t.gpu_hours:.4f}", _usd(t.cost_usd), _usd(t.api_cost_usd),
             _usd(t.total_usd)] for k, t in groups.items()]


def format_table(s: Summary) -> str:
    if not s.runs:
        return "no runs in the ledger"
    per_run = [[r["run_id"], r["stage"], r["cluster"], r["gpu_type"], r["status"],
                f"{r['gpu_hours']:.4f}", _usd(r["cost_usd"]), _usd(r["api_cost_usd"]),
                _usd(r["total_usd"]), verdict(r)] for r in s.runs]
    head = ["runs", "GPU-h", "compute", "API", "total"]
    parts = [
        "Runs",
        _table(["run", "stage", "cluster", "gpu", "status", *head[1:], "target (compute)"], per_run),
        "", "Per stage", _table(["stage", *head], _totals_rows(s.by_stage)),
        "", "Per cluster", _table(["cluster", *head], _totals_rows(s.by_cluster)),
        "", "Total", _table(["", *head], _totals_rows({"all runs": s.total})),
    ]
    if s.training:
        over = [r for r in s.training if r["target_met"] is False]
        parts += ["", f"Training runs against their target (compute cost): {len(s.training) - len(over)} "
                      f"met, {len(over)} over" + (f" ({', '.join(r['run_id'] for r in over)})" if over else "")]
    return "\n".join(parts)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def _nothing_to_draw(ax, what: str) -> None:
    """All figures zero: say so instead of drawing zero-height bars on a -0.04..0.04 axis."""
    ax.text(0.5, 0.5, f"{what}: all zero", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def usage_measure(s: Summary) -> tuple[str, str]:
    """Which usage figure the charts show: GPU-hours when any run held GPUs, else CPU-hours
    (CPU runs: the one non-zero figure). (row key, axis label)."""
    if any(r["gpu_hours"] > 0 for r in s.runs) or not any(r["cpu_hours"] > 0 for r in s.runs):
        return "gpu_hours", "GPU-hours"
    return "cpu_hours", "CPU-hours (no GPU runs)"


def _usage_panel(ax, s: Summary, stages: list[str]) -> None:
    key, label = usage_measure(s)
    bottom = [0.0] * len(stages)
    for cluster in sorted({r["cluster"] for r in s.runs}):
        vals = [sum(r[key] for r in s.runs if r["stage"] == st and r["cluster"] == cluster)
                for st in stages]
        ax.bar(stages, vals, bottom=bottom, label=cluster)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    if not any(bottom):
        _nothing_to_draw(ax, label)
        return
    ax.set_title(f"{label.split(' (')[0]} by stage")
    ax.set_ylabel(label)
    ax.set_ylim(0, max(bottom) * 1.1)
    ax.legend(title="cluster")


def _cost_panel(ax, s: Summary, stages: list[str]) -> None:
    compute = [s.by_stage[st].cost_usd if st in s.by_stage else 0.0 for st in stages]
    api = [s.by_stage[st].api_cost_usd if st in s.by_stage else 0.0 for st in stages]
    ax.set_title("Cost by stage (USD)")
    if not any(compute) and not any(api):
        _nothing_to_draw(ax, "cost (USD)")
        return
    ax.bar(stages, compute, label="compute")
    ax.bar(stages, api, bottom=compute, label="API")
    ax.set_ylabel("USD")
    ax.set_ylim(0, max(c + a for c, a in zip(compute, api, strict=True)) * 1.1)
    ax.legend()


def _target_panel(ax, s: Summary) -> None:
    train = s.training
    ax.set_title("Training runs: compute cost vs target (dashed)")
    if not train:
        _nothing_to_draw(ax, "training runs")
        return
    colors = ["tab:green" if r["target_met"] else "tab:red" for r in train]
    ax.bar(range(len(train)), [r["cost_usd"] for r in train], color=colors)
    for i, r in enumerate(train):
        ax.hlines(r["target_usd"], i - 0.4, i + 0.4, colors="black", linestyles="dashed")
    ax.set_xticks(range(len(train)), [r["run_id"] for r in train], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("USD")
    ax.set_ylim(0, max(max(r["cost_usd"], r["target_usd"]) for r in train) * 1.1)


def report_figure(s: Summary):
    """Three panels: usage by stage (GPU-hours, or CPU-hours when no run held a GPU; stacked
    by cluster), cost by stage (compute vs API), each training run's compute cost against its
    target. A panel whose figures are all zero says so rather than drawing a degenerate axis."""
    fig, axes = _pyplot().subplots(1, 3, figsize=(15, 4.5), dpi=100)
    stages = list(s.by_stage) or ["-"]
    _usage_panel(axes[0], s, stages)
    _cost_panel(axes[1], s, stages)
    _target_panel(axes[2], s)
    fig.tight_layout()
    return fig


def render_png(s: Summary) -> bytes:
    return _png(report_figure(s))


def render_loss_png(rows: list[dict[str, Any]], title: str = "") -> bytes:
    """A training run's loss curve (``metrics.jsonl`` rows: step, loss), 800x400."""
    fig, ax = _pyplot().subplots(figsize=(8, 4), dpi=100)
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    ax.plot(steps, losses, color="tab:blue", linewidth=2, marker="o" if len(rows) < 30 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mean per target token)")
    ax.set_title(title or "training loss")
    if len(steps) == 1:
        ax.set_xlim(steps[0] - 1, steps[0] + 1)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def render_run_summary(rec: RunRecord, loss_png: bytes | None) -> str:
    """``summary.html`` of one run: its record's figures, and the loss curve inline."""
    import re

    from alpaca_jobs.ops.present import format_report

    rows = [[*re.split(r"\s{2,}", line.strip(), maxsplit=1), ""][:2] for line in format_report(rec).splitlines()]
    table = _html_table(["", ""], rows)
    img = "" if loss_png is None else (
        '<h2>Loss</h2><img alt="training loss by step" '
        f'src="data:image/png;base64,{base64.b64encode(loss_png).decode()}">')
    title = html.escape(f"{rec.run_id}: {rec.job} run, {rec.status}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>{title}</h1>{table}{img}
</body></html>
"""


def write_run_summary(rec: RunRecord, run_dir: Path) -> list[Path]:
    """``loss.png`` (runs that logged losses) and ``summary.html`` in the run directory."""
    from alpaca_jobs.common.files import atomic_write

    metrics = run_dir / "metrics.jsonl"
    rows = []
    if metrics.is_file():
        rows = [r for r in (json.loads(x) for x in metrics.read_text().splitlines() if x.strip())
                if isinstance(r.get("loss"), int | float)]
    written, png = [], None
    if rows:
        png = render_loss_png(rows, f"{rec.run_id}: training loss ({len(rows)} steps)")
        (run_dir / "loss.png").write_bytes(png)
        written.append(run_dir / "loss.png")
    atomic_write(run_dir / "summary.html", render_run_summary(rec, png))
    written.append(run_dir / "summary.html")
    return written


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(s: Summary, png: bytes) -> str:
    """A self-contained page: the chart inline (base64) and every table of the text report."""
    head = ["runs", "GPU-hours", "compute USD", "API USD", "total USD"]
    per_run = [[r["run_id"], r["stage"], r["cluster"], r["gpu_type"], r["status"], r["started_at"],
                f"{r['gpu_hours']:.4f}", _usd(r["cost_usd"]), _usd(r["api_cost_usd"]),
                _usd(r["total_usd"]), verdict(r)] for r in s.runs]
    img = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>alpaca-jobs: GPU-hours and cost</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}th{{background:#f3f3f3}}
img{{max-width:100%}}</style></head><body>
<h1>GPU-hours and cost</h1>
<p>{s.total.runs} runs, {s.total.gpu_hours:.4f} GPU-hours, compute {_usd(s.total.cost_usd)},
API {_usd(s.total.api_cost_usd)}, total {_usd(s.total.total_usd)}. Training runs are held to
their compute target ($100 unless the run's cost.target_usd sets another).</p>
<img alt="GPU-hours and cost by stage; training runs against their target" src="data:image/png;base64,{img}">
<h2>Per stage</h2>{_html_table(["stage", *head], _totals_rows(s.by_stage))}
<h2>Per cluster</h2>{_html_table(["cluster", *head], _totals_rows(s.by_cluster))}
<h2>Total</h2>{_html_table(["", *head], _totals_rows({"all runs": s.total}))}
<h2>Runs</h2>{_html_table(["run", "stage", "cluster", "GPU", "status", "started", "GPU-hours",
                            "compute USD", "API USD", "total USD", "target (compute)"], per_run)}
</body></html>
"""


def load_summary(ledger: str | None, runs_dir: str | None, scan: str | None) -> tuple[Summary, Path, int | None]:
    """The ledger's summary, its path, and how many records ``scan`` imported first (None: no scan)."""
    from alpaca_jobs.ops import ledger as ledger_mod

    runs = Path(runs_dir or os.environ.get("ALPACA_JOBS_RUNS_DIR", "runs"))
    path = Path(ledger) if ledger else ledger_mod.ledger_path(runs_dir=runs)
    with ledger_mod.connect(path, create=bool(scan)) as conn:
        n = ledger_mod.backfill(conn, Path(scan)) if scan else None
        return summarize(ledger_mod.records(conn)), path, n
