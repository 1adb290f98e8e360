"""The demo's REPORT.md: headings nest without jumps, embedded reports sit under their section,
transfer syntaxes are named, and the patch counts are stated once for every step."""

from __future__ import annotations

import re

import numpy as np

from medforensics.demo.pipeline import demote_headings, report_markdown
from medforensics.eval import tables
from medforensics.eval.classification import grouped_accuracy

EXPLICIT_LE = "1.2.840.10008.1.2.1"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"


def _headings(markdown: str) -> list[tuple[int, str]]:
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith(("```", "~~~")):
            fenced = not fenced
        m = re.match(r"(#{1,6}) (.*)", line)
        if m and not fenced:
            out.append((len(m.group(1)), m.group(2)))
    return out


def _evaluation_md() -> str:
    """An evaluation report laid out like the one ``evaluate_run`` writes."""
    y = np.array([0, 1, 1, 0])
    by_ts = grouped_accuracy(y, y, [EXPLICIT_LE, J2K_LOSSLESS, EXPLICIT_LE, "(none)"])
    return "\n".join([
        "# Evaluation of `run` (patch, label `model`, split `test`)",
        "",
        "Images: 4 evaluated.",
        "",
        tables.grouped_accuracy_table(by_ts, title="Accuracy per transfer syntax",
                                      group_header="Transfer syntax",
                                      group_name=tables.uid_name),
        "",
        "![confusion](confusion.png)",
        "",
    ])


def _report() -> str:
    return report_markdown(
        summary=["Simulated archive.", "", "Patches per image: training draws 48 per image and "
                 "epoch and validates on 32 fixed ones; calibration, evaluation and identify "
                 "use 64."],
        identify_table="| # | File |\n|---|---|\n| 1 | a.dcm |",
        evaluation_md=_evaluation_md(),
        evaluation_dir="evaluation",
        forgery_md="## Forgery detection (training-free cues)\n\nA table.\n",
        timings={"train": 1.5, "total": 2.0},
    )


def test_report_headings_nest() -> None:
    heads = _headings(_report())
    assert heads[0] == (1, "medforensics demo report")
    assert [lvl for lvl, _ in heads].count(1) == 1
    for (prev, _), (lvl, text) in zip(heads, heads[1:]):
        assert lvl <= prev + 1, f"heading {text!r} jumps from level {prev} to {lvl}"
    # the evaluation's own title sits under the section that embeds it
    titles = [t for _, t in heads]
    i = titles.index("Test-set evaluation")
    assert heads[i + 1] == (3, "Evaluation of `run` (patch, label `model`, split `test`)")
    assert (2, "Forgery detection (training-free cues)") in heads


def test_report_links_and_names() -> None:
    text = _report()
    assert "![confusion](evaluation/confusion.png)" in text
    # transfer syntaxes by name; the raw UID only in the machine-readable results
    assert "| Explicit VR Little Endian | 2 |" in text
    assert "JPEG 2000 Image Compression (Lossless Only)" in text
    assert EXPLICIT_LE not in text and J2K_LOSSLESS not in text
    assert "| (none) | 1 |" in text
    assert text.count("Patches per image") == 1


def test_demote_headings_keeps_code_and_text() -> None:
    md = "# A\n\ntext # not a heading\n```\n# code\n```\n###### deep\n#hashtag\n"
    assert demote_headings(md, 2) == (
        "### A\n\ntext # not a heading\n```\n# code\n```\n###### deep\n#hashtag\n")
