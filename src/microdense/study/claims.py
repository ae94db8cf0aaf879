"""`microdense study claims DIR`: the paper's claims, each with the verdicts its studies' rules give, as one table.

A study tests a claim when its `claim:` starts with the claim's number ("C4: ...") and it states a rule; each line its
rule gives of the rows in DIR/<study>/ is a row of the table, with the commits its rows were made at: their study
file's, the commits `decide` reads the rule at (`made_at`). A claim no such study tests says so. The table is written
to DIR/claims.md; README quotes it, and a test holds the two equal.
"""
import re
from pathlib import Path
from typing import Dict, List

from microdense.study.decide import decide, made_at
from microdense.study.decision import NO_VERDICT
from microdense.study.results import RESULTS_FILE, read_rows
from microdense.study.spec import load_study, packaged_studies

CLAIMS_FILE = "claims.md"
# the abstract's claims (arXiv:2004.08796), as docs/design.md numbers them
CLAIMS = {"C1": "a 4M-parameter net", "C2": "more accurate than the state of the art", "C3": "12.1x smaller",
          "C4": "micro-dense aggregation, pyramidal widths and adaptive cardinality each help",
          "C5": "the block boosts NAS networks", "C6": "it carries to ImageNet-1K"}
HEADER = ["claim", "study", "verdict", "figures", "commit"]
NOT_AS_REGISTERED = "rule not as registered"


def _commits(folder: Path) -> str:
    commits = sorted({made_at(r)[0] or "?" for r in read_rows(folder / RESULTS_FILE)})
    return ", ".join(c[:7] for c in commits)


def _verdicts(lines: List[str]) -> List[List[str]]:
    """A rule's lines as (verdict, figures) rows: a verdict is what follows a line's last '->', its figures what
    precedes it; a line that waits (NO_VERDICT) or says the rule is not as registered is a row with no verdict.
    Any other line is context every verdict rests on (the frontier's curve), not a row of its own."""
    rows = []
    for line in lines:
        figures, arrow, verdict = line.rpartition(" -> ")
        if arrow:
            rows.append([verdict, figures])
        elif NO_VERDICT in line or line.startswith(NOT_AS_REGISTERED):
            rows.append([NO_VERDICT, line])
    return rows


def claims_table(results: Path) -> str:
    """The claims table, in markdown, from the packaged studies with rules and their folders under `results`."""
    rows: Dict[str, List[List[str]]] = {c: [] for c in CLAIMS}
    for name in packaged_studies():
        study = load_study(name)
        numbers = re.findall(r"C\d", study.claim.split(":")[0])
        folder = results / name
        if study.decision is None or not numbers:
            continue
        if not read_rows(folder / RESULTS_FILE):
            rows.update({n: rows[n] + [[name, "no rows yet", "", ""]] for n in numbers})
            continue
        decision = decide(study, folder)
        lines = decision.lines if decision.problem is None else [f"{NOT_AS_REGISTERED}: {decision.problem}"]
        commits = _commits(folder)
        for number in numbers:
            rows[number] += [[name, *verdict, commits] for verdict in _verdicts(lines)]
    table = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join("---" for _ in HEADER) + " |"]
    for number, text in CLAIMS.items():
        for row in rows[number] or [["-", "not tested by a study with a rule", "", ""]]:
            table.append("| " + " | ".join([f"{number}: {text}", *row]).replace("\n", " ") + " |")
    return "\n".join(table) + "\n"


def write_claims(results: Path) -> Path:
    from microdense.io import atomic_write_text
    path = results / CLAIMS_FILE
    atomic_write_text(path, claims_table(results))
    return path
