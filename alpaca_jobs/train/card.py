"""What makes a trained model directory work in other tools as it is: the Alpaca prompt as the
tokenizer's chat template, the trained length as ``model_max_length``, no settings of this
machine, and a model card (README.md) saying how it was made and what it cost."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from alpaca_jobs.common.template import chat_template

if TYPE_CHECKING:
    from alpaca_jobs.ops.record import RunRecord

MACHINE_SETTINGS = ("local_files_only", "is_local", "cache_dir", "token", "use_auth_token")


def finish_tokenizer(tok, preamble_with_input: str, preamble_no_input: str, max_length: int) -> None:
    """Before ``save_pretrained``: the chat template of the prompt trained on, a real length."""
    bos = tok.bos_token_id is not None and tok.encode("x", add_special_tokens=True)[:1] == [tok.bos_token_id]
    tok.chat_template = chat_template(preamble_with_input, preamble_no_input, bos)
    tok.model_max_length = max_length
    for key in MACHINE_SETTINGS:
        tok.init_kwargs.pop(key, None)


def model_card(loaded: Any, rec: RunRecord) -> str:
    """README.md for the model directory: recipe, data, hardware, cost, how to prompt it."""
    spec, cfg = loaded.spec, loaded.spec.train
    data = rec.data
    loss = rec.final_loss
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [alpaca, alpaca-jobs]", "---",
        f"# {spec.name}", "",
        f"Instruction-tuned from `{cfg.base_model}` with the Alpaca recipe by alpaca-jobs (run `{rec.run_id}`).",
        "", "## Recipe", "",
        f"- epochs {cfg.epochs}, learning rate {cfg.learning_rate} ({cfg.lr_scheduler}, warm-up {cfg.warmup_ratio}), "
        f"global batch {cfg.global_batch_size}, max length {cfg.max_length}, weight decay {cfg.weight_decay}",
        f"- {rec.processes} process(es) on {rec.nodes} node(s) x {rec.gpus_per_node} GPU(s) "
        f"({rec.gpu_type or 'CPU'}), FSDP2, {loaded.layout.mixed_precision} precision",
        f"- steps {rec.steps}/{rec.total_steps}, final loss "
        f"{'-' if loss is None else f'{loss:.4f}'}, {rec.tokens_per_second:,.0f} tokens/s",
        "", "## Data", "",
        f"- `{cfg.data}`: {data.get('kept', '?')} examples kept of {data.get('records_read', '?')} "
        f"({data.get('skipped_empty_output', 0)} empty outputs and {data.get('skipped_duplicate', 0)} "
        "duplicates dropped)",
        "", "## Cost", "",
        f"- {rec.gpu_hours:.4f} GPU-hours, {rec.cpu_hours:.4f} CPU-hours over {rec.attempts} "
        f"attempt(s): ${rec.cost_usd:.2f} at ${rec.price_per_gpu_hour_usd:.2f}/GPU-h "
        f"[{rec.price_source}] (as measured when the model was written)",
        "", "## Evaluation", "",
        "- Not evaluated when written. `alpaca-jobs submit jobs/evaluate.yaml` compares it with "
        "another system, blind and pairwise; the pipeline's summary holds the result.",
        "", "## Prompting", "",
        "The tokenizer's chat template is the Alpaca prompt it was trained on: the last user message "
        "is the instruction; pass an input as `apply_chat_template(messages, input=...)`.",
        "", "```python", "from transformers import pipeline",
        "chat = pipeline('text-generation', model='PATH/TO/THIS/DIRECTORY')",
        "print(chat([{'role': 'user', 'content': 'Give three tips for staying healthy.'}])[0]['generated_text'])",
        "```", "",
    ]
    return "\n".join(lines)


def write_card(model_dir: Path, loaded: Any, rec: RunRecord) -> Path:
    from alpaca_jobs.common.files import atomic_write

    path = model_dir / "README.md"
    atomic_write(path, model_card(loaded, rec))
    return path
