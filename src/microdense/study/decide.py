"""`microdense study decide`: a study's rule applied to its rows, as the rule stood when its first row was made.

A rule is registered before the first run: the study file's `decision:` section at the commit the first row records
for that file (its `study_file`; for rows from before that record, the package's commit in its provenance) is the rule
the rows are judged by. Where the file's rule differs now, decision.txt says so and the command fails, unless told to
accept it in so many words. A rule moved from the description's prose into the data form names the commit whose prose
it encodes (`encodes:`); that is accepted when the rows were made under that very prose, since it changes the rule's
form and not the rule (the identical decision then shows it).
"""
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from microdense.errors import ConfigError
from microdense.io import atomic_write_text
from microdense.study.decision import as_data, parse_decision, same_rule
from microdense.study.results import RESULTS_FILE, read_rows
from microdense.study.spec import Study

DECISION_FILE = "decision.txt"


@dataclass
class Decision:
    lines: List[str]  # the rule's verdicts
    problem: Optional[str]  # why the rule applied is not the one registered before the first row; None when it is

    def text(self, accepted: bool = False) -> str:
        """What decision.txt holds: the verdicts, under a line that says the rule is not as registered, if so."""
        head = [f"RULE NOT AS REGISTERED: {self.problem}" + ("; accepted by --accept-changed-rule" if accepted else "")]
        return "\n".join((head if self.problem else []) + self.lines) + "\n"


def code_commit(row: Dict[str, Any]) -> Optional[str]:
    """The commit of microdense's sources a row was made from (its provenance), None for a row from before it."""
    return ((row.get("provenance") or {}).get("code") or {}).get("commit")


def made_at(row: Dict[str, Any]) -> Tuple[Optional[str], bool]:
    """The commit a row's study file stood at, and whether it had uncommitted changes: the file's own, where the row
    records it (a study file may live in another repository than microdense), else the package's (a packaged study's
    rows from before rows recorded it)."""
    study_file = row.get("study_file") or {}
    return study_file.get("commit") or code_commit(row), bool(study_file.get("dirty"))


def _file_at(commit: str, path: Path) -> Optional[Dict[str, Any]]:
    """The study file as it stood at `commit` in its own repository (parsed), or None where git or the commit cannot
    show it."""
    try:
        proc = subprocess.run(["git", "-C", str(path.resolve().parent), "show", f"{commit}:./{path.name}"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return yaml.safe_load(proc.stdout) if proc.returncode == 0 else None


def _registration(study: Study, path: Path, first_row: Dict[str, Any]) -> Optional[str]:
    """None when the rule applied now is the one registered when `first_row` was made; otherwise why not, in one
    line."""
    commit, dirty = made_at(first_row)
    if commit is None:
        return "no row names the commit it was made at, so the rule it was registered under cannot be read"
    if dirty:
        return f"the first row was made from {path.name} with uncommitted changes, so no commit holds its rule"
    then = _file_at(commit, path)
    if then is None:
        return f"the study file {path.name} cannot be read at commit {commit[:7]}, the first row's"
    labels = [e["label"] if isinstance(e, dict) and "label" in e else e.get("model") for e in then.get("entries", [])]
    reference_then = then.get("reference", labels[0] if labels else None)
    if reference_then != study.reference:  # the paired rules' d_s is measured from it: its sign and pairs
        return (f"the reference in {path.name} is {study.reference!r}, but it was {reference_then!r} at commit "
                f"{commit[:7]}, the first row's")
    rule_then = parse_decision(then.get("decision"), f"{path.name} at {commit[:7]}", labels)
    if rule_then is not None:
        return None if same_rule(rule_then, study.decision) else (
            f"the rule in {path.name} differs from the one it held at commit {commit[:7]}, the first row's: then "
            f"{as_data(rule_then)}, now {as_data(study.decision)}")
    if study.decision.encodes is None:
        return f"{path.name} held no decision section at commit {commit[:7]}, the first row's, and the rule names no " \
               "commit whose prose it encodes (encodes:)"
    prose = _file_at(study.decision.encodes, path)
    if prose is None or prose.get("description") != then.get("description"):
        return f"the rule encodes the prose of commit {study.decision.encodes}, but the first row (commit " \
               f"{commit[:7]}) was made under other prose"
    return None


def decide(study: Study, folder: Path) -> Decision:
    """The decision the rule of `study` (read from its file by `load_study`) gives of the rows in `folder`.

    Raises:
        ConfigError: the study has no rule, was not read from a file, or has no rows yet.
    """
    if study.decision is None:
        raise ConfigError(f"study {study.name} has no decision section: it states no rule to apply")
    if study.path is None:
        raise ConfigError(f"study {study.name} was not read from a file, so the rule registered before its first row "
                         "cannot be read from the file's history; load it with load_study")
    rows = read_rows(folder / RESULTS_FILE)
    if not rows:
        raise ConfigError(f"{folder / RESULTS_FILE} holds no rows yet; run the study first (microdense study run "
                         f"{study.name} --out {folder})")
    first = min(rows, key=lambda r: r.get("finished") or "")
    lines = study.decision.decide(rows, study.reference, folder, entries=[e.label for e in study.entries])
    code = sorted({code_commit(r) or "?" for r in rows})
    if len(code) > 1:  # a study's rows come from one committed tree (lanes pin it); say so where they do not
        lines = [f"rows from {len(code)} commits of the code ({', '.join(c[:7] for c in code)}): the verdicts below "
                 "pool them"] + lines
    return Decision(lines, _registration(study, Path(study.path), first))


def write_decision(decision: Decision, folder: Path, accept_changed_rule: bool = False) -> Path:
    """folder/decision.txt, written even for a rule not as registered (it says so).

    Raises:
        ConfigError: the rule is not the one registered before the first row, and that was not accepted.
    """
    out = folder / DECISION_FILE
    atomic_write_text(out, decision.text(accepted=accept_changed_rule))
    if decision.problem and not accept_changed_rule:
        raise ConfigError(f"{decision.problem}; {out} says so. Restore the registered rule, or accept the change in "
                         "so many words (--accept-changed-rule)")
    return out
