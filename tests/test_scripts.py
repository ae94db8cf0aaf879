"""The prepared scripts: `scripts/gpu-check.sh` is valid bash and, without a GPU, stops at once and says why; a
study's decision script gives the verdicts its pre-registered rule states."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_scripts_are_valid_bash(script):
    proc = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run the whole check")
def test_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    out = tmp_path / "gpu-check"
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu-check.sh")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PY": sys.executable, "OUT": str(out)})
    assert proc.returncode == 3
    assert proc.stderr.strip() == ("gpu-check: no CUDA GPU visible to torch (torch.cuda.is_available() is False); "
                                   "run this on a GPU machine")
    assert not out.exists()


def _script_module(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(folder: Path, rows) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(
        json.dumps({"entry": e, "seed": s, "val_top1": v}) + "\n" for e, s, v in rows))
    return str(folder)


WORSE_PER_EPOCH = "pre-activation stays (post-activation is worse per epoch than two seeds can resolve)"
TRAILS = "pre-activation stays (post-activation trails at equal time)"
POST = "post-activation becomes the default"


@pytest.mark.parametrize("post_epochs, post_timed, post_rate, outcome", [
    ((0.80, 0.79), (0.75, 0.75), 100.0, WORSE_PER_EPOCH),
    ((0.858, 0.848), (0.75, 0.75), 1.0, POST),  # 0.2 points worse per epoch, inside the 0.3 floor: eligible
    ((0.845, 0.855), (0.75, 0.75), 1.0, POST),  # -1.5 / +0.5: mean -0.5 inside the seeds' spread 1.41: eligible
    ((0.861, 0.851), (0.76, 0.76), 1.0, POST),  # ahead at equal time
    ((0.861, 0.851), (0.72, 0.72), 100.0, TRAILS),
    ((0.861, 0.851), (0.741, 0.739), 100.0, POST),  # a tie in time, faster
    ((0.861, 0.851), (0.741, 0.739), 10.0, "pre-activation stays"),  # a tie in time, slower
])
def test_postact_decision_rule(tmp_path, capsys, post_epochs, post_timed, post_rate, outcome):
    epochs = _rows(tmp_path / "epochs", [("pre", 0, 0.86), ("pre", 1, 0.85),
                                         ("post", 0, post_epochs[0]), ("post", 1, post_epochs[1])])
    timed = _rows(tmp_path / "time", [("pre", 0, 0.74), ("pre", 1, 0.74),
                                      ("post", 0, post_timed[0]), ("post", 1, post_timed[1])])
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"results": [
        {"model": "microdensenet_cifar_tiny:channels_last=true", "train_img_s": 50.0},
        {"model": "microdensenet_cifar_tiny:preact=false:channels_last=true", "train_img_s": post_rate}]}))
    assert _script_module("postact-decide").main(epochs, timed, str(bench)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "outcome: " + outcome


def test_postact_decide_waits_for_two_seeds(tmp_path, capsys):
    epochs = _rows(tmp_path / "epochs", [("pre", 0, 0.86), ("pre", 1, 0.85), ("post", 0, 0.86)])
    assert _script_module("postact-decide").main(epochs, str(tmp_path / "none"), str(tmp_path / "none.json")) == 1
    assert "no decision yet" in capsys.readouterr().out


def test_group_width_decision_rule(tmp_path, capsys):
    # d=8 is best per epoch; d=4 is within d=4's own spread of it, d=2 within the best's spread, d=16 in neither; at
    # equal time d=4 and d=8 tie within 0.3 points, so the faster of the two wins
    epochs = _rows(tmp_path / "epochs", [("d=8", 0, 0.825), ("d=8", 1, 0.815), ("d=4", 0, 0.82), ("d=4", 1, 0.80),
                                         ("d=2", 0, 0.815), ("d=2", 1, 0.815), ("d=16", 0, 0.80), ("d=16", 1, 0.80)])
    timed = _rows(tmp_path / "time", [("d=8", 0, 0.77), ("d=8", 1, 0.77), ("d=4", 0, 0.772), ("d=4", 1, 0.772),
                                      ("d=2", 0, 0.76), ("d=2", 1, 0.76), ("d=16", 0, 0.80), ("d=16", 1, 0.80)])
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"results": [
        {"model": f"microdensenet_cifar_tiny:group_width={d}:channels_last=true", "train_img_s": rate}
        for d, rate in ((4, 90.0), (8, 120.0), (16, 200.0))]}))
    assert _script_module("group-width-decide").main(epochs, timed, str(bench)) == 0
    out = capsys.readouterr().out
    step2 = out.split("(2)")[1]
    assert "d=2 76.00" in step2  # eligible: 0.5 behind, inside the best's spread 0.71 though its own is 0
    assert "d=16" not in step2  # out at step (1), so its faster, more accurate timed runs do not count
    assert out.splitlines()[-1] == "winner: d=8"


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for the venv's python: records each call. A study run ends when $FINISH exists; on SIGINT it records the
# signal and "saves" until $SAVED exists, recording every further SIGINT that comes meanwhile.
trap 'echo "SIGINT $*" >> "$CALLS"; stopping=1' INT
echo "$*" >> "$CALLS"
case "$*" in *"study report"*) exit 0 ;; esac
while [ ! -e "$FINISH" ] && [ -z "${stopping:-}" ]; do sleep 0.05; done
[ -z "${stopping:-}" ] || { while [ ! -e "$SAVED" ]; do sleep 0.05; done; exit 130; }
"""


@pytest.fixture
def lanes(tmp_path):
    """A repository holding study-lanes.sh, and the environment that runs it against a fake python."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "study-lanes.sh").write_text((SCRIPTS / "study-lanes.sh").read_text())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "lanes"], cwd=repo, check=True)
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "DATA": str(tmp_path), "CALLS": str(tmp_path / "calls"),
           "FINISH": str(tmp_path / "finish"), "SAVED": str(tmp_path / "saved")}
    command = ["bash", str(repo / "scripts" / "study-lanes.sh"), "s", str(tmp_path / "out"), "3", "0 2", "1"]
    return repo, env, command, tmp_path / "calls"


def _shards(calls: Path, prefix: str = "-m microdense_cli study run") -> list:
    """The shards of the fake's recorded lines that start with `prefix` (its study runs, or the SIGINTs they got)."""
    return sorted(line.split("--shard ")[1].split()[0] for line in calls.read_text().splitlines()
                  if line.startswith(prefix))


def test_study_lanes_run_every_shard_from_the_pinned_commit_then_report(lanes):
    repo, env, command, calls = lanes
    Path(env["FINISH"]).touch()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _shards(calls) == ["0/3", "1/3", "2/3"]
    assert calls.read_text().splitlines()[-1].startswith("-m microdense_cli study report")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert (Path(env["DATA"]) / "out" / "lanes-commit").read_text().strip() == head
    assert (repo.parent / "worktrees" / f"s-{head[:7]}" / "scripts" / "study-lanes.sh").exists()


@pytest.mark.parametrize("stop", ["the script", "every study-lanes process", "the script, twice"])
def test_study_lanes_stop_gives_each_run_one_sigint_and_starts_nothing_more(lanes, stop):
    """`pkill -f study-lanes.sh` (TERM to the script and its lanes), a TERM to the script alone, or a stop repeated
    while the runs save: each running run gets exactly one SIGINT (a second would abort it without its checkpoint),
    lane a never starts its second shard, and no report is written."""
    import signal
    import time
    repo, env, command, calls = lanes

    def wait_for(condition, what):
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    # started as `(setsid nohup scripts/study-lanes.sh ... &)` starts it: in its own session, with SIGINT ignored
    proc = subprocess.Popen(["bash", "-c", 'trap "" INT; exec "$@"', "-", *command], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: calls.exists() and len(_shards(calls)) == 2, "the two lanes' first runs never started")
        if stop == "every study-lanes process":
            subprocess.run(["pkill", "-f", str(repo / "scripts" / "study-lanes.sh")], check=True)
        else:
            proc.send_signal(signal.SIGTERM)
        wait_for(lambda: len(_shards(calls, "SIGINT")) == 2, "the stop did not reach both runs")
        if stop.endswith("twice"):
            proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # time for a second SIGINT to arrive, were one sent
        Path(env["SAVED"]).touch()
        _, err = proc.communicate(timeout=30)
    finally:  # never leave the script or its fake runs behind
        Path(env["FINISH"]).touch()
        Path(env["SAVED"]).touch()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1
    assert _shards(calls) == ["0/3", "1/3"]
    assert _shards(calls, "SIGINT") == ["0/3", "1/3"]
    assert not any("study report" in line for line in calls.read_text().splitlines())
    assert err.strip().splitlines()[-1].endswith("the same command resumes")
