"""Every study row committed outside the archive names the code and libraries that made it, so each published
figure can be traced to a commit and re-run (docs/results/archive/ holds the older rows that cannot), and every
committed decision follows from those rows by its study's rule."""
import json
import re
from pathlib import Path

import pytest

from microdense.study.decide import decide
from microdense.study.spec import load_study

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
ROWS = [(path, number, line) for path in sorted(RESULTS.glob("**/results.jsonl")) if "archive" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]


def test_there_are_committed_rows_to_check():
    assert len({path.parent.name for path, _, _ in ROWS}) >= 3


@pytest.mark.parametrize("path, number, line", ROWS,
                         ids=[f"{p.parent.name}:{n}" for p, n, _ in ROWS])
def test_every_committed_row_names_its_commit_and_libraries(path, number, line):
    provenance = json.loads(line).get("provenance") or {}
    code, versions = provenance.get("code") or {}, provenance.get("versions") or {}
    assert re.fullmatch(r"[0-9a-f]{40}", code.get("commit") or ""), "no commit: re-run it, or move it to archive/"
    assert code.get("dirty") is False, "made from a tree with uncommitted changes"
    assert {"torch", "torchvision", "timm", "lightning"} <= versions.keys()


DECISIONS = sorted(RESULTS.glob("*/decision.txt"))


def test_there_are_committed_decisions_to_check():
    assert {p.parent.name for p in DECISIONS} >= {"ablation", "group-width", "postact"}


@pytest.mark.parametrize("decision", DECISIONS, ids=[p.parent.name for p in DECISIONS])
def test_every_committed_decision_is_what_its_rule_says_of_the_committed_rows(decision):
    """The decision files quoted in README are re-derived from the rows beside them by the study's own rule, the one
    registered before its first row (`microdense study decide`)."""
    name = decision.parent.name
    derived = decide(load_study(name), decision.parent)
    assert derived.problem is None
    assert derived.text() == decision.read_text()


def test_releasing_a_committed_study_whose_run_folders_hold_no_weights_is_one_line(tmp_path, cli_here):
    study = RESULTS / "converged"
    run = sorted((study / "runs").iterdir())[0]
    assert not (run / "model.safetensors").exists()  # committed: configuration and curves, never weights
    proc = cli_here("study", "release", str(study), "--tag", "cifar10", "--format", "hub", "--out", str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "holds no weights (no model.safetensors); train it again" in lines[0]


def test_readme_quotes_the_claims_table_the_rules_give():
    """README's claims table is the one `microdense study claims docs/results` writes from the committed rows."""
    from microdense.study.claims import CLAIMS_FILE, claims_table
    table = claims_table(RESULTS)
    assert (RESULTS / CLAIMS_FILE).read_text() == table
    readme = (RESULTS.parents[1] / "README.md").read_text()
    assert readme.split("<!-- claims -->\n")[1].split("<!-- /claims -->")[0] == table


def test_the_claims_table_names_the_commit_its_rule_was_read_at(tmp_path):
    """A row that records its study file's commit is listed at that commit, the one `decide` reads the rule at, not
    at the package's."""
    import subprocess

    from microdense.study.claims import claims_table
    head = subprocess.run(["git", "-C", str(RESULTS), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    rows = [json.loads(line) for line in (RESULTS / "ablation" / "results.jsonl").read_text().splitlines()]
    assert {r["provenance"]["code"]["commit"] for r in rows} != {head}
    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / "results.jsonl").write_text("".join(
        json.dumps({**r, "study_file": {"commit": head, "dirty": False}}) + "\n" for r in rows))
    listed = [line for line in claims_table(tmp_path).splitlines() if "| ablation |" in line]
    assert listed and all(line.endswith(f"| {head[:7]} |") for line in listed)


def test_the_claims_table_lists_the_frontiers_verdicts_not_its_curve(tmp_path):
    """Once the frontier's curve is complete its rule gives a line of context (the curve) before each net's line;
    the claims table lists each net's line under C2 and C3, never the curve as a verdict of its own."""
    from microdense.study.claims import claims_table
    committed = [json.loads(line) for line in (RESULTS / "frontier" / "results.jsonl").read_text().splitlines()]
    resnet56 = [r for r in committed if r["entry"] == "resnet56"]
    assert len(resnet56) == 2  # seeds 0 and 1: the rows below add a resnet110 one point above them
    made = committed + [{**r, "entry": "resnet110", "params": 1_731_002, "val_top1": r["val_top1"] + 0.01}
                        for r in resnet56 if not any(c["entry"] == "resnet110" for c in committed)]
    (tmp_path / "frontier").mkdir()
    (tmp_path / "frontier" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in made))
    listed = [line for line in claims_table(tmp_path).splitlines() if "| frontier |" in line]
    assert len(listed) == 4 and not any("curve:" in line for line in listed)  # tiny and small, under C2 and C3
    assert sum("| tiny (0.26M): mean" in line and "at this size |" in line for line in listed) == 2
    assert sum("| no verdict yet | small: 0 seed(s) beside a complete curve" in line for line in listed) == 2
