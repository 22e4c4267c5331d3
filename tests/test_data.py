import json

import pytest

from alpaca_jobs.common.errors import DataError
from alpaca_jobs.common.template import format_prompt
from alpaca_jobs.train.data import IGNORE_INDEX, build_examples, read_records

PRE = ("PRE-IN.", "PRE-NO.")


def test_two_prompt_formats_use_the_alpaca_markers():
    assert format_prompt("Add.", "2 and 3", *PRE) == (
        "PRE-IN.\n\n### Instruction:\nAdd.\n\n### Input:\n2 and 3\n\n### Response:\n"
    )
    assert format_prompt("Say hi.", "", *PRE) == "PRE-NO.\n\n### Instruction:\nSay hi.\n\n### Response:\n"


def test_prompt_is_masked_target_is_output_plus_eos(tiny, tmp_path):
    tok, _ = tiny
    f = tmp_path / "d.json"
    f.write_text(json.dumps([{"instruction": "Name a colour.", "input": "", "output": "Blue."}]))
    [ex], stats = build_examples(f, tok, 512, PRE)
    prompt_ids = tok.encode(format_prompt("Name a colour.", "", *PRE))
    target = tok.encode("Blue.", add_special_tokens=False) + [tok.eos_token_id]
    assert ex.input_ids == prompt_ids + target
    assert ex.labels == [IGNORE_INDEX] * len(prompt_ids) + target
    assert ex.input_ids[0] == tok.bos_token_id
    assert stats.kept == 1 and stats.target_tokens == len(target)


def test_truncation_empty_and_duplicates_are_counted(tiny, tmp_path):
    tok, _ = tiny
    rows = [
        {"instruction": "Repeat.", "input": "", "output": "word " * 400},
        {"instruction": "Empty.", "input": "", "output": "  "},
        {"instruction": "Dup.", "input": "x", "output": "y"},
        {"instruction": "Dup.", "input": "x", "output": "y"},
        {"instruction": "Long prompt " * 300, "input": "", "output": "z"},
    ]
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, stats = build_examples(f, tok, 64, PRE)
    assert all(len(e.input_ids) <= 64 for e in examples)
    assert (stats.records_read, stats.kept, stats.truncated) == (5, 2, 1)
    assert (stats.skipped_empty_output, stats.skipped_duplicate, stats.skipped_no_target_tokens) == (1, 1, 1)
    assert any("d.jsonl:2: empty output" in d for d in stats.details)


def test_seed_format_expands_instances():
    recs = read_records(__import__("tests.conftest", fromlist=["SEEDS"]).SEEDS)
    assert len(recs) == 175
    assert all(r.output for r in recs)


@pytest.mark.parametrize(
    "content,needle",
    [
        ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n', "d.jsonl:2: not valid JSON"),
        ('{"instruction": "a", "output": 3}\n', "d.jsonl:1: field 'output' must be a string, got int"),
        ('{"instruction": "a"}\n', "d.jsonl:1: missing field 'output'"),
        ('{"instruction": "a", "output": "b"}\n"text"\n', "d.jsonl:2: each record must be a JSON object"),
        ("\n\n", "no records"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, content, needle):
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    with pytest.raises(DataError) as exc:
        read_records(f)
    assert needle in str(exc.value)


def test_malformed_json_list_names_line_and_record(tmp_path):
    f = tmp_path / "d.json"
    f.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "a" "output": "b"}\n]')
    with pytest.raises(DataError, match=r"d.json:3: not valid JSON"):
        read_records(f)
    f.write_text('[{"instruction": "a", "output": "b"}, {"instruction": 1, "output": "b"}]')
    with pytest.raises(DataError, match=r"d.json record 1: field 'instruction' must be a string"):
        read_records(f)


def test_missing_data_file(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        read_records(tmp_path / "nope.json")


def test_non_utf8_and_lone_surrogates_name_file_and_line(tmp_path):
    from alpaca_jobs.generate.seeds import load_seeds

    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl:2: not UTF-8 text"):
        read_records(latin)
    with pytest.raises(DataError, match=r"latin.jsonl:2: not UTF-8 text"):
        load_seeds(latin)
    lone = tmp_path / "lone.jsonl"
    lone.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "x\\ud800y", "output": "b"}\n')
    with pytest.raises(DataError, match=r"lone.jsonl:2: field 'instruction': contains a lone surrogate \(U\+D800\)"):
        read_records(lone)
    seed = tmp_path / "seed.jsonl"
    seed.write_text('{"instruction": "x", "instances": [{"input": "", "output": "\\udfff"}]}\n')
    with pytest.raises(DataError, match=r"seed.jsonl:1: contains a lone surrogate"):
        load_seeds(seed)
