"""The comparison report: ``report.json`` (every number), ``report.png`` (a chart) and
``report.html`` (one self-contained page: numbers, chart inline, every item side by side).
All rates are system_a's; "wins" are items where system_a was preferred."""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any

from alpaca_jobs.evaluate import stats
from alpaca_jobs.evaluate.collect import output_key
from alpaca_jobs.evaluate.instructions import Item
from alpaca_jobs.evaluate.judge import combine


def build(items: list[Item], outputs: dict, names: tuple[str, str], judgments: list[dict],
          humans: dict[str, dict[str, str]], samples: int, seed: int,
          judge_model: str | None = None) -> dict[str, Any]:
    """Every number of the report, as plain JSON-able data."""
    a, b = names
    label = {a: "a", b: "b", "tie": "tie"}
    verdicts: dict[str, dict[str, str]] = {}
    llm = None
    if judgments:
        verdicts["llm"] = combine(judgments, a, b)
        llm = {**stats.summary(verdicts["llm"], samples, seed), "model": judge_model,
               "position": _position(judgments)}
    raters = {r: {k: label[v] for k, v in prefs.items() if v in label} for r, prefs in humans.items()}
    people = None
    if raters:
        for r, v in raters.items():
            verdicts[f"human:{r}"] = v
        people = {"raters": {r: stats.summary(v, samples, seed) for r, v in sorted(raters.items())},
                  "majority": stats.summary(stats.majority(raters), samples, seed),
                  "ratings": sum(len(v) for v in raters.values())}
    agreement = [{"between": [x, y], **stats.agreement(verdicts[x], verdicts[y])}
                 for x, y in combinations(sorted(verdicts, key=lambda k: (k != "llm", k)), 2)]
    lengths = {}
    for name in names:
        rows = [outputs[output_key(it.id, name)] for it in items if output_key(it.id, name) in outputs]
        lengths[name] = stats.lengths([r["output"] for r in rows], [r.get("output_tokens", 0) for r in rows])
    return {"systems": {"a": a, "b": b}, "rates_are_for": a, "items": len(items),
            "llm_judge": llm, "humans": people, "agreement": agreement, "lengths": lengths,
            "verdicts": verdicts}


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The run record's ``results``: the LLM judge's numbers, else the people's."""
    source, s = ("llm", report["llm_judge"]) if report["llm_judge"] else (
        ("humans", report["humans"]["majority"]) if report["humans"] else (None, None))
    out = {"system_a": report["systems"]["a"], "system_b": report["systems"]["b"],
           "items": report["items"], "judged_by": source}
    if s:
        out.update({k: s[k] for k in ("win_rate", "ci95", "wins", "ties", "losses", "invalid", "judged")})
    return out


def _position(judgments: list[dict]) -> dict[str, Any]:
    """How often the judge picked whichever answer was shown first (0.5 = no position bias)."""
    raw = Counter(j["verdict"] for j in judgments)
    decided = raw["A"] + raw["B"]
    return {"verdicts": dict(raw), "first_preferred": round(raw["A"] / decided, 4) if decided else None}


def write(report: dict[str, Any], items: list[Item], outputs: dict, run_dir: Path) -> list[Path]:
    from alpaca_jobs.common.files import atomic_write

    paths = [run_dir / "report.json", run_dir / "report.png", run_dir / "report.html"]
    atomic_write(paths[0], json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    chart(report, paths[1])
    atomic_write(paths[2], page(report, items, outputs, paths[1].read_bytes()))
    return paths


def _rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [("LLM judge", report["llm_judge"])] if report["llm_judge"] else []
    if report["humans"]:
        rows.append(("people (majority)", report["humans"]["majority"]))
        rows += [(f"rater {r}", s) for r, s in report["humans"]["raters"].items()]
    return rows


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = report["systems"]["a"], report["systems"]["b"]
    rows = _rows(report) or [("no judgments yet", {"wins": 0, "ties": 0, "losses": 0, "judged": 0})]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 1.6 + 0.5 * len(rows)),
                                      gridspec_kw={"width_ratios": [3, 1.4]})
    labels = [r for r, _ in rows][::-1]
    parts = [(f"{a} preferred", "wins", "#3b7dd8"), ("tie", "ties", "#bbbbbb"), (f"{b} preferred", "losses", "#e0823d")]
    start = [0.0] * len(rows)
    for title, key, colour in parts:
        share = [s[key] / s["judged"] if s["judged"] else 0 for _, s in rows][::-1]
        left.barh(labels, share, left=start, color=colour, label=title)
        start = [x + y for x, y in zip(start, share, strict=True)]
    for i, (_, s) in enumerate(rows[::-1]):
        if s.get("win_rate") is not None:
            left.text(1.01, i, f"{s['win_rate']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]",
                      va="center", fontsize=8)
    left.set_xlim(0, 1.3)
    left.set_xticks([0, 0.25, 0.5, 0.75, 1])
    left.set_xlabel(f"share of judged items (right: {a}'s win rate, 95% CI)")
    left.legend(loc="lower center", bbox_to_anchor=(0.4, 1.0), ncol=3, fontsize=8, frameon=False)
    lengths = report["lengths"]
    right.bar([a, b], [lengths[n].get("mean_words", 0) for n in (a, b)], color=["#3b7dd8", "#e0823d"])
    right.set_title("mean output length (words)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def page(report: dict[str, Any], items: list[Item], outputs: dict, png: bytes) -> str:
    e = html.escape
    a, b = report["systems"]["a"], report["systems"]["b"]
    summary = "".join(
        f"<tr><td>{e(name)}</td><td>{s['wins']}</td><td>{s['ties']}</td><td>{s['losses']}</td>"
        f"<td>{s['invalid']}</td><td>{_num(s['win_rate'])}</td><td>{_ci(s['ci95'])}</td></tr>"
        for name, s in _rows(report))
    summary = summary or '<tr><td colspan=7>no judgments yet: an LLM judge, or people (alpaca-jobs rate)</td></tr>'
    agree = "".join(f"<tr><td>{e(' vs '.join(g['between']))}</td><td>{g['items']}</td>"
                    f"<td>{_num(g['percent'])}</td><td>{_num(g['kappa'])}</td></tr>" for g in report["agreement"])
    agree = agree or "<tr><td colspan=4>needs two judges</td></tr>"
    lengths = "".join(f"<tr><td>{e(n)}</td><td>{_num(s.get('mean_words'))}</td><td>{_num(s.get('mean_tokens'))}"
                      f"</td><td>{s.get('empty', 0)}</td></tr>" for n, s in report["lengths"].items())
    per_item = "".join(_item_row(it, outputs, report["verdicts"], a, b) for it in items)
    img = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(a)} vs {e(b)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}} table{{border-collapse:collapse;margin:1rem 0}}
td,th{{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top;text-align:left}}
.t{{white-space:pre-wrap;max-width:32rem}} img{{max-width:100%}}</style></head><body>
<h1>{e(a)} vs {e(b)}</h1>
<p>{report['items']} items. Rates are {e(a)}'s: (wins + ties/2) / judged items, with a bootstrap
95% interval. The LLM judge saw every pair in both orders; a pair counts as a win only when both
orders agree.</p>
<table><tr><th>judge</th><th>{e(a)} wins</th><th>ties</th><th>{e(b)} wins</th><th>invalid</th>
<th>win rate</th><th>95% CI</th></tr>{summary}</table>
<img alt="wins, ties and losses per judge; mean output lengths" src="data:image/png;base64,{img}">
<h2>Agreement between judges</h2>
<table><tr><th>judges</th><th>items both judged</th><th>agreement %</th><th>Cohen's kappa</th></tr>{agree}</table>
<h2>Output lengths</h2>
<table><tr><th>system</th><th>mean words</th><th>mean tokens</th><th>empty</th></tr>{lengths}</table>
<h2>Items</h2>
<table><tr><th>request</th><th>{e(a)}</th><th>{e(b)}</th><th>verdicts</th><th>reference</th></tr>{per_item}</table>
</body></html>
"""


def _item_row(it: Item, outputs: dict, verdicts: dict[str, dict[str, str]], a: str, b: str) -> str:
    e = html.escape
    text = {n: outputs.get(output_key(it.id, n), {}).get("output", "") for n in (a, b)}
    names = {"a": a, "b": b}
    given = "<br>".join(f"{e(judge)}: {e(names.get(v[it.id], v[it.id]))}"
                        for judge, v in verdicts.items() if it.id in v)
    return (f"<tr><td class=t><b>{e(it.id)}</b>\n{e(it.prompt)}</td><td class=t>{e(text[a])}</td>"
            f"<td class=t>{e(text[b])}</td><td>{given}</td><td class=t>{e(it.reference)}</td></tr>")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _ci(ci: list[float] | None) -> str:
    return "-" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def format_text(report: dict[str, Any]) -> str:
    """The report in a terminal: one line per judge, then agreement and lengths."""
    a, b = report["systems"]["a"], report["systems"]["b"]
    lines = [f"{a} vs {b}: {report['items']} items (rates are {a}'s)"]
    for name, s in _rows(report):
        lines.append(f"  {name:<18} {a} {s['wins']} / tie {s['ties']} / {b} {s['losses']}"
                     f" (invalid {s['invalid']}); win rate {_num(s['win_rate'])} 95% CI {_ci(s['ci95'])}")
    if not _rows(report):
        lines.append("  no judgments yet: configure evaluate.judge, or rate with `alpaca-jobs rate`")
    for g in report["agreement"]:
        lines.append(f"  agreement {' vs '.join(g['between'])}: {_num(g['percent'])}% on {g['items']} "
                     f"items, kappa {_num(g['kappa'])}")
    for n, s in report["lengths"].items():
        lines.append(f"  length {n}: {_num(s.get('mean_words'))} words, {_num(s.get('mean_tokens'))} "
                     f"tokens on average ({s.get('empty', 0)} empty)")
    return "\n".join(lines)
