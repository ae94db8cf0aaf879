"""`microdense study run STUDY --out DIR --lanes N`: a study in N lanes, one thread each, from a pinned commit.

Each lane is a queue of the study's runs, each run its own process (`study run --shard I/RUNS`, one run per shard),
niced, so a study goes on beside other work on a small machine. They run from a git worktree pinned at the commit the
study began at (DIR/lanes-commit), so every row names that commit while the checkout moves on. The same command
resumes: finished runs are skipped, an interrupted one continues from its last checkpoint.

One stop (Ctrl-C, or SIGTERM to this process) reaches each running run as exactly one SIGINT, on which it saves its
last checkpoint and exits (a second would abort it unsaved), and no lane starts another run. Equal work only: lanes
share the machine, so their timings are not benchmarks.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from microdense.errors import ConfigError
from microdense.study.spec import Study, plan

COMMIT_FILE = "lanes-commit"
LANE_NAMES = "abcdefghijklmnopqrstuvwxyz"


def lane_runs(study: Study, lanes: int) -> List[List[int]]:
    """Each lane's runs (their index in the plan): a seed per lane where the seeds divide among the lanes, so lanes
    carry equal work; otherwise every lane-th run."""
    runs = plan(study)
    if len(study.seeds) % lanes == 0:
        return [[r.index for r in runs if study.seeds.index(r.seed) % lanes == lane] for lane in range(lanes)]
    return [[r.index for r in runs if r.index % lanes == lane] for lane in range(lanes)]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ConfigError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip().splitlines()[-1:]}; lanes run "
                         "from a git checkout of microdense")
    return proc.stdout.strip()


def pinned_tree(repo: Path, out: Path, name: str) -> Path:
    """The worktree at the commit the study began at (recorded in out/lanes-commit at its first start)."""
    record = out / COMMIT_FILE
    if not record.is_file() or not record.read_text().strip():
        out.mkdir(parents=True, exist_ok=True)
        record.write_text(_git(repo, "rev-parse", "HEAD") + "\n")
    commit = record.read_text().strip()
    tree = repo.parent / "worktrees" / f"{name}-{commit[:7]}"
    if not tree.is_dir():
        _git(repo, "worktree", "prune")  # a worktree whose folder was deleted stays registered until pruned
        _git(repo, "worktree", "add", "--detach", str(tree), commit)
    return tree


def pinned_study_file(study_arg: str, repo: Path, tree: Path) -> str:
    """A study file inside the checkout, as the runs (working in the pinned tree) must name it to read the pinned
    copy, not the checkout's live one; any other name as it is."""
    path = Path(study_arg)
    if path.is_absolute() and path.resolve().is_relative_to(repo.resolve()):
        inside = path.resolve().relative_to(repo.resolve())
        if (tree / inside).is_file():
            return str(inside)
    return study_arg


class Lanes:
    """The supervisor: starts each lane's next run when its last ends, and turns a stop into one SIGINT per run."""

    def __init__(self, commands: Sequence[Sequence[List[str]]], logs: Sequence[Path], cwd: Path,
                 env: Dict[str, str]):
        self.queues = [list(c) for c in commands]
        self.logs, self.cwd, self.env = logs, cwd, env
        self.running: Dict[int, subprocess.Popen] = {}
        self.interrupted: set = set()  # pids already sent their SIGINT
        self.stopping = False
        self.failed: List[int] = []  # lanes whose run ended in failure: they start nothing more

    def stop(self, *_: object) -> None:
        self.stopping = True
        for proc in self.running.values():
            if proc.pid not in self.interrupted:
                self.interrupted.add(proc.pid)
                proc.send_signal(signal.SIGINT)

    def _start(self, lane: int) -> None:
        command = self.queues[lane].pop(0)
        with open(self.logs[lane], "a") as log:
            # NOTE: its own session, so a terminal's Ctrl-C reaches it only through this supervisor (as one SIGINT);
            # SIGINT's disposition is this process's handler, which exec resets to the default for the run
            self.running[lane] = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=log,
                                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                  start_new_session=True)

    def run(self, poll: float = 0.2) -> bool:
        """Run every lane to its end or to a stop; True when every run finished."""
        while True:
            if self.stopping:
                self.stop()  # a stop that came while a run was starting reaches it too
            for lane, queue in enumerate(self.queues):
                if lane not in self.running and queue and not self.stopping and lane not in self.failed:
                    self._start(lane)
            for lane, proc in list(self.running.items()):
                if proc.poll() is not None:
                    del self.running[lane]
                    if proc.returncode != 0:
                        self.failed.append(lane)
            if not self.running and (self.stopping or not any(
                    q for lane, q in enumerate(self.queues) if lane not in self.failed)):
                return not self.stopping and not self.failed
            time.sleep(poll)


def run_lanes(study: Study, study_arg: str, out: Path, lanes: int, forwarded: Sequence[str] = (), threads: int = 1,
              repo: Optional[Path] = None, python: str = sys.executable,
              announce: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> int:
    """Run `study` (named on the command line as `study_arg`) in `lanes` lanes into `out`; the exit status: 0 when
    every run finished (the report is then written), 130 after a stop, 1 when a run failed (its lane's log says why).
    `forwarded`: the `study run` options every run gets (data, test folder)."""
    from microdense.provenance import source_root
    repo = repo or source_root()
    if repo is None:
        raise ConfigError("lanes run from a git checkout of microdense, and this installation is not one; run the "
                          "study's shards yourself (microdense study run STUDY --shard I/N)")
    out = out.resolve()
    tree = pinned_tree(repo, out, study.name)
    study_arg = pinned_study_file(study_arg, repo, tree)
    count = len(plan(study))
    commands = [[["nice", python, "-m", "microdense_cli", "study", "run", study_arg, "--out", str(out), "--shard",
                  f"{i}/{count}", "--quiet", *forwarded] for i in runs] for runs in lane_runs(study, lanes)]
    logs = [out / f"lane-{LANE_NAMES[i]}.log" for i in range(lanes)]
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": str(threads)}
    supervisor = Lanes(commands, logs, tree, env)
    previous = {s: signal.signal(s, supervisor.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    announce(f"study {study.name}: {count} runs in {lanes} lanes of {threads} thread(s), from commit "
             f"{(out / COMMIT_FILE).read_text().strip()[:7]} ({tree}); logs {', '.join(str(p) for p in logs)}; "
             "Ctrl-C stops them, each run saving its last checkpoint")
    try:
        finished = supervisor.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not finished:
        why = "stopped" if supervisor.stopping else "a run failed (see " + ", ".join(
            str(logs[i]) for i in supervisor.failed) + ")"
        announce(f"study {study.name}: lanes ended early, {why}; the same command resumes")
        return 130 if supervisor.stopping else 1
    return subprocess.run([python, "-m", "microdense_cli", "study", "report", str(out)], cwd=tree, env=env).returncode
