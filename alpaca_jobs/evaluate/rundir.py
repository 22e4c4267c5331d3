"""What an evaluation keeps in its run directory, and reading it back.

    evaluate.json      the resolved ``evaluate`` config (no secrets: keys are env var names)
    items.jsonl        the items evaluated (instruction, input, reference)
    outputs.jsonl      one line per (item, system), appended as each arrives
    judgments.jsonl    one line per (item, order), appended as each arrives
    ratings.sqlite3    people's ratings (``alpaca-jobs rate``), unless raters_db says elsewhere
    api_usage/*.json   API spend of each attempt (a resumed run pays only for what it redid)
    report.json|png|html, run.json
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.evaluate.config import EvaluateConfig
from alpaca_jobs.evaluate.instructions import Item

CONFIG, ITEMS, OUTPUTS, JUDGMENTS = "evaluate.json", "items.jsonl", "outputs.jsonl", "judgments.jsonl"
RATINGS = "ratings.sqlite3"
USAGE_DIR = "api_usage"
_SUMMED = ("requests", "retries", "input_tokens", "output_tokens", "cost_usd")


def pin(run_dir: Path, cfg: EvaluateConfig, items: list[Item]) -> None:
    """Write the config and items; a run dir begun for other systems is refused (its outputs
    would be mixed with the new ones)."""
    from alpaca_jobs.common.files import atomic_write

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG
    if path.is_file():
        old = json.loads(path.read_text())
        was = (old["system_a"]["name"], old["system_b"]["name"])
        now = (cfg.system_a.name, cfg.system_b.name)
        if was != now:
            raise UserError(f"{run_dir} holds an evaluation of {was[0]} vs {was[1]}, not {now[0]} vs "
                            f"{now[1]}; use a new run directory")
    atomic_write(path, json.dumps(cfg.model_dump(mode="json"), indent=1) + "\n")
    atomic_write(run_dir / ITEMS, "".join(json.dumps(asdict(it), ensure_ascii=False) + "\n" for it in items))


@dataclass
class Run:
    run_dir: Path
    cfg: EvaluateConfig
    items: list[Item]

    @property
    def names(self) -> tuple[str, str]:
        return self.cfg.system_a.name, self.cfg.system_b.name

    @property
    def ratings_path(self) -> Path:
        return Path(self.cfg.raters_db) if self.cfg.raters_db else self.run_dir / RATINGS


def load(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file() or not (run_dir / ITEMS).is_file():
        raise UserError(f"{run_dir}: not an evaluation run directory (no {CONFIG} / {ITEMS}); "
                        "run `alpaca-jobs evaluate` first")
    cfg = EvaluateConfig.model_validate(json.loads((run_dir / CONFIG).read_text()))
    items = [Item(**json.loads(x)) for x in (run_dir / ITEMS).read_text().splitlines() if x.strip()]
    return Run(run_dir, cfg, items)


def save_usage(run_dir: Path, attempt: str, spends: dict[str, Any]) -> dict[str, Any]:
    """Write this attempt's API spend, then return the run's total over every attempt."""
    from alpaca_jobs.common.files import atomic_write

    (run_dir / USAGE_DIR).mkdir(parents=True, exist_ok=True)
    this = {role: s.as_dict() for role, s in spends.items()}
    atomic_write(run_dir / USAGE_DIR / f"{attempt}.json", json.dumps(this, indent=1) + "\n")
    by_role: dict[str, dict[str, float]] = {}
    for f in sorted((run_dir / USAGE_DIR).glob("*.json")):
        for role, spend in json.loads(f.read_text()).items():
            acc = by_role.setdefault(role, dict.fromkeys(_SUMMED, 0))
            for key in _SUMMED:
                acc[key] += spend[key]
    total = {key: sum(r[key] for r in by_role.values()) for key in _SUMMED}
    total["cost_usd"] = round(total["cost_usd"], 6)
    this_total = {key: sum(s[key] for s in this.values()) for key in ("requests", "cost_usd")}
    return {**total, "by_role": by_role, "this_attempt": this_total}
