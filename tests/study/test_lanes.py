"""`microdense study run --lanes`: every run from the pinned commit, and one stop that reaches each running run as
exactly one SIGINT, tested against a fake python that records what it is asked and what signals it gets."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from microdense.study.lanes import lane_runs
from microdense.study.spec import load_study, parse_study

TINY = "microdensenet_cifar_tiny"
STUDY = dict(budget={"epochs": 1}, seeds=[0], entries=[{"model": TINY, "label": label} for label in "xyz"])

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: records each call. A study run ends when $FINISH exists; on SIGINT it records the signal and
# "saves" until $SAVED exists, recording every further SIGINT that comes meanwhile.
trap 'echo "SIGINT $*" >> "$CALLS"; stopping=1' INT
echo "$*" >> "$CALLS"
case "$*" in *"study report"*) exit 0 ;; esac
while [ ! -e "$FINISH" ] && [ -z "${stopping:-}" ]; do sleep 0.05; done
[ -z "${stopping:-}" ] || { while [ ! -e "$SAVED" ]; do sleep 0.05; done; exit 130; }
"""


def test_lanes_carry_a_seed_each_where_the_seeds_divide_among_them():
    assert lane_runs(load_study("frontier"), 2) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert lane_runs(parse_study(STUDY, "s", "s.yaml"), 2) == [[0, 2], [1]]


@pytest.fixture
def lanes(tmp_path):
    """A repository holding a three-run study, and the command that runs it in two lanes against a fake python."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "s.yaml").write_text(yaml.safe_dump(STUDY))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "study"], cwd=repo, check=True)
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "CALLS": str(tmp_path / "calls"), "FINISH": str(tmp_path / "finish"),
           "SAVED": str(tmp_path / "saved")}
    code = ("import sys; from pathlib import Path; from microdense.study.lanes import run_lanes; "
            "from microdense.study.spec import load_study; "
            f"sys.exit(run_lanes(load_study({str(repo / 's.yaml')!r}), 's.yaml', Path({str(tmp_path / 'out')!r}), 2, "
            f"repo=Path({str(repo)!r}), python={str(fake)!r}))")
    return repo, env, [sys.executable, "-c", code], tmp_path / "calls"


def _shards(calls: Path, prefix: str = "-m microdense_cli study run") -> list:
    """The shards of the fake's recorded lines that start with `prefix` (its study runs, or the SIGINTs they got)."""
    return sorted(line.split("--shard ")[1].split()[0] for line in calls.read_text().splitlines()
                  if line.startswith(prefix))


def _wait_for(condition, what):
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_lanes_run_every_run_from_the_pinned_commit_then_report(lanes):
    repo, env, command, calls = lanes
    Path(env["FINISH"]).touch()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _shards(calls) == ["0/3", "1/3", "2/3"]  # one run per shard, each once
    assert calls.read_text().splitlines()[-1].startswith("-m microdense_cli study report")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    out = Path(env["CALLS"]).parent / "out"
    assert (out / "lanes-commit").read_text().strip() == head
    assert (repo.parent / "worktrees" / f"s-{head[:7]}" / "s.yaml").exists()
    assert {p.name for p in out.glob("lane-*.log")} == {"lane-a.log", "lane-b.log"}


@pytest.mark.parametrize("stop", [[signal.SIGTERM], [signal.SIGINT], [signal.SIGTERM, signal.SIGINT]])
def test_a_stop_gives_each_run_one_sigint_and_starts_nothing_more(lanes, stop):
    """SIGTERM, a Ctrl-C, or a stop repeated while the runs save: each running run gets exactly one SIGINT (a second
    would abort it without its checkpoint), lane a never starts its second run, and no report is written."""
    repo, env, command, calls = lanes
    # started as `(setsid nohup microdense study run ... &)` starts it: in its own session, with SIGINT ignored
    proc = subprocess.Popen(["bash", "-c", 'trap "" INT; exec "$@"', "-", *command], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: calls.exists() and len(_shards(calls)) == 2, "the two lanes' first runs never started")
        proc.send_signal(stop[0])
        _wait_for(lambda: len(_shards(calls, "SIGINT")) == 2, "the stop did not reach both runs")
        for again in stop[1:]:
            proc.send_signal(again)
        time.sleep(0.5)  # time for a second SIGINT to arrive, were one sent
        Path(env["SAVED"]).touch()
        _, err = proc.communicate(timeout=60)
    finally:  # never leave the supervisor or its fake runs behind
        Path(env["FINISH"]).touch()
        Path(env["SAVED"]).touch()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert _shards(calls) == ["0/3", "1/3"]
    assert _shards(calls, "SIGINT") == ["0/3", "1/3"]
    assert not any("study report" in line for line in calls.read_text().splitlines())
    assert err.strip().splitlines()[-1].endswith("stopped; the same command resumes")


def test_a_study_file_of_the_checkout_is_read_from_the_pinned_tree(tmp_path):
    """The runs work in the pinned tree: a study file given by its full path in the checkout must reach them as the
    pinned copy, not the live file a later edit changes; a file outside the checkout or absent from the pin stays."""
    from microdense.study.lanes import pinned_study_file
    repo, tree = tmp_path / "repo", tmp_path / "worktrees" / "s-abc1234"
    (tree / "studies").mkdir(parents=True)
    (tree / "studies" / "s.yaml").write_text("")
    assert pinned_study_file(str(repo / "studies" / "s.yaml"), repo, tree) == "studies/s.yaml"
    assert pinned_study_file(str(repo / "studies" / "new.yaml"), repo, tree) == str(repo / "studies" / "new.yaml")
    assert pinned_study_file(str(tmp_path / "s.yaml"), repo, tree) == str(tmp_path / "s.yaml")
    assert pinned_study_file("frontier", repo, tree) == "frontier"


def test_lanes_take_no_shard(cli_here, tmp_path):
    proc = cli_here("study", "run", "frontier", "--out", str(tmp_path), "--lanes", "2", "--shard", "0/2")
    assert proc.returncode == 2 and "takes no --shard" in proc.stderr
