"""Experiment trackers as an option (``train.trackers``): TensorBoard, and Weights & Biases when
it is installed, through accelerate's own tracker classes. Rank 0 logs each step's loss,
learning rate, gradient norm and tokens per second; the run's hyperparameters once."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from alpaca_jobs.common.errors import UserError

NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # tracker -> the package it needs


def check(names: list[str]) -> None:
    """Before submission: each tracker's package is installed here."""
    for name in names:
        if importlib.util.find_spec(NEEDS[name]) is None:
            raise UserError(f"train.trackers: {name} needs the {NEEDS[name]} package "
                            f"(pip install {NEEDS[name]}), or leave it out")


class Trackers:
    def __init__(self, names: list[str], run_dir: Path, run_name: str, config: dict[str, Any]) -> None:
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        check(names)
        self.open = []
        for name in names:
            tracker = (TensorBoardTracker(run_name, run_dir / "tensorboard") if name == "tensorboard"
                       else WandBTracker(run_name))
            tracker.start()
            tracker.store_init_configuration(config)
            self.open.append(tracker)

    def log(self, values: dict[str, float], step: int) -> None:
        for tracker in self.open:
            tracker.log(values, step=step)

    def finish(self) -> None:
        for tracker in self.open:
            tracker.finish()
        self.open = []
