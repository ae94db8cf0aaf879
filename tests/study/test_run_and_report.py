"""`microdense study run/report`: the runs as `microdense train` makes them, skipping, resuming, sharding, rows
appended only, the report's arithmetic, and one-line refusals before anything runs."""
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_image_tree
from microdense.errors import DataError
from microdense.study.report import epoch_curves, write_report
from microdense.study.results import append_row, read_rows
from microdense.study.runner import run_study
from microdense.study.spec import load_study, packaged_studies, smoke

TINY = "microdensenet_cifar_tiny"
SMALL_DATA = dict(name="synthetic", limit_images=4, batch_size=2, workers=0)
STUDY = dict(claim="a test", data=SMALL_DATA, recipe="budget", budget={"steps": 2}, seeds=[0, 1], reference="tiny",
             entries=[{"label": "tiny", "model": TINY},
                      {"label": "residual", "model": TINY, "kwargs": {"aggregation": "residual"},
                       "params_like": "tiny"}])


def write_study(folder: Path, **changes) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}))
    return path


def quiet_run(path_or_study, out: Path, **kwargs):
    """The study run in-process; the checkout's own state (dirty while someone edits it) is allowed unless a test
    says otherwise."""
    study = load_study(str(path_or_study)) if isinstance(path_or_study, (str, Path)) else path_or_study
    kwargs.setdefault("allow_dirty", True)
    return run_study(study, out, progress=False, announce=lambda line: None, **kwargs)


def test_a_study_runs_every_entry_and_seed_then_skips_them(tmp_path):
    out = tmp_path / "out"
    done = quiet_run(write_study(tmp_path), out)
    assert (done.ran, done.skipped, done.planned) == (4, 0, 4)
    rows = read_rows(out / "results.jsonl")
    assert sorted((r["entry"], r["seed"]) for r in rows) == [("residual", 0), ("residual", 1), ("tiny", 0),
                                                             ("tiny", 1)]
    for r in rows:
        assert r["steps"] == 2 and r["budget"] == {"steps": 2} and r["train_seconds"] > 0 and r["img_s"] > 0
        assert r["resumed_at_step"] is None  # ran from the start, so `seconds` is the whole run's wall time
        assert 0 <= r["val_top1"] <= r["val_top5"] <= 1 and r["val_loss"] > 0 and r["macs"] > 0
        assert r["config_sha"] and r["provenance"]["machine"]["cores"] >= 1 and r["provenance"]["machine"]["isa"]
        assert set(r["provenance"]["versions"]) == {"torch", "torchvision", "timm", "lightning"}
        assert r["provenance"]["code"]["commit"] and isinstance(r["provenance"]["code"]["dirty"], bool)
        data = r["provenance"]["data"]
        assert data["name"] == "synthetic" and data["images"] == sum(data["per_class"].values()) and data["sha256"]
        run = out / "runs" / r["run"]
        assert (run / "model.safetensors").exists() and (run / "config.yaml").exists()  # train's own run folder
        assert yaml.safe_load((run / "config.yaml").read_text())["run"]["seed"] == r["seed"]
    tiny, residual = (next(r for r in rows if r["entry"] == e) for e in ("tiny", "residual"))
    assert residual["kwargs"]["aggregation"] == "residual" and "width_multiplier" in residual["kwargs"]
    assert abs(residual["params"] / tiny["params"] - 1) <= 0.03
    before = (out / "results.jsonl").read_bytes()
    again = quiet_run(write_study(tmp_path), out)
    assert (again.ran, again.skipped) == (0, 4)
    assert (out / "results.jsonl").read_bytes() == before


def test_shards_share_the_work_and_their_rows_concatenate(tmp_path):
    path = write_study(tmp_path)
    for i in range(3):
        quiet_run(path, tmp_path / f"shard{i}", shard=(i, 3))
    rows = [row for i in range(3) for row in read_rows(tmp_path / f"shard{i}" / "results.jsonl")]
    assert sorted(r["run"] for r in rows) == ["residual-seed0", "residual-seed1", "tiny-seed0", "tiny-seed1"]
    assert sorted(r["run"] for r in read_rows(tmp_path / "shard0" / "results.jsonl")) == ["residual-seed1",
                                                                                          "tiny-seed0"]


def test_a_killed_run_resumes_from_its_checkpoint_and_a_bare_folder_is_set_aside(tmp_path):
    path, out = write_study(tmp_path, seeds=[0], entries=STUDY["entries"][:1] + [{"label": "b", "model": TINY}]), \
        tmp_path / "out"
    quiet_run(path, out)
    rows = (out / "results.jsonl").read_text().splitlines()
    # as if the study was killed after tiny's last checkpoint, before its row, and before b saved anything
    (out / "results.jsonl").write_text("")
    bare = out / "runs" / "b-seed0"
    for child in sorted(bare.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    (bare / "config.yaml").write_text("half a run\n")
    done = quiet_run(path, out)
    assert done.ran == 2
    assert (out / "runs" / "tiny-seed0" / "logs-2").is_dir()  # resumed: a second log beside the first
    assert (out / "runs" / "b-seed0.incomplete-1" / "config.yaml").read_text() == "half a run\n"
    assert json.loads(rows[0])["run"] == "tiny-seed0"
    assert {r["run"] for r in read_rows(out / "results.jsonl")} == {"tiny-seed0", "b-seed0"}


def test_a_changed_study_does_not_mix_with_rows_it_did_not_make(tmp_path):
    out = tmp_path / "out"
    quiet_run(write_study(tmp_path, seeds=[0]), out)
    with pytest.raises(ValueError, match="holds run tiny-seed0 from another configuration"):
        quiet_run(write_study(tmp_path, seeds=[0], budget={"steps": 3}), out)


def test_rows_from_before_a_training_field_was_added_still_count(tmp_path):
    # An older version wrote the row: its hash covered one field fewer, and its run folder's config lacks that field.
    out = tmp_path / "out"
    study = write_study(tmp_path, seeds=[0], entries=STUDY["entries"][:1])
    quiet_run(study, out)
    row = read_rows(out / "results.jsonl")[0]
    (out / "results.jsonl").write_text(json.dumps({**row, "config_sha": "0123456789ab"}) + "\n")
    saved = out / "runs" / "tiny-seed0" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    saved.write_text(yaml.safe_dump({k: v for k, v in config.items() if k != "lookahead"}))
    assert quiet_run(study, out).skipped == 1
    # without the folder to show it, such a row is refused as one from another configuration
    (out / "runs" / "tiny-seed0").rename(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="holds run tiny-seed0 from another configuration"):
        quiet_run(study, out)


def test_test_dir_adds_test_top1(tmp_path):
    tree = make_image_tree(tmp_path / "test", classes=10, per_class=2, size=32)
    for c in range(10):  # the synthetic set's class names: eval refuses a test set of other classes
        (tree / f"class{c}").rename(tree / f"class_{c}")
    out = tmp_path / "out"
    quiet_run(write_study(tmp_path, seeds=[0], entries=STUDY["entries"][:1]), out, test_dir=str(tree))
    [row] = read_rows(out / "results.jsonl")
    assert row["test_images"] == 20 and 0 <= row["test_top1"] <= row["test_top5"] <= 1


def test_rows_are_only_appended_and_a_torn_line_is_skipped(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    append_row(path, {"run": "a"})
    first = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"run": "tor')  # a write cut short by a crash
    append_row(path, {"run": "b"})
    assert path.read_bytes().startswith(first)
    assert [r["run"] for r in read_rows(path)] == ["a", "b"]
    assert "not a complete row" in caplog.text


def test_two_rows_of_one_entry_and_seed_are_refused_not_counted_twice(tmp_path):
    path = tmp_path / "results.jsonl"
    for row in (_row("a", 0, 0.5), _row("a", 1, 0.6), _row("a", 0, 0.7)):  # shard folders merged twice by cat
        append_row(path, row)
    with pytest.raises(DataError, match=r"holds two rows of a at seed 0 \(lines 1 and 3\); keep the one its run"):
        read_rows(path)


def _row(entry, seed, top1, test=None, params=1000, seconds=60.0):
    row = dict(study="s", entry=entry, model="m", params=params, macs=5_000_000, seed=seed, val_top1=top1,
               img_s=100.0, train_seconds=seconds, run=f"{entry}-seed{seed}", budget={"epochs": 1}, recipe="budget",
               command="microdense study run s --out d", machine=dict(cpu="cpu", cores=2, torch_threads=2))
    if test is not None:
        row["test_top1"] = test
    return row


def test_report_means_spreads_and_deltas(tmp_path, capsys):
    for row in (_row("ref", 0, 0.50, 0.40), _row("ref", 1, 0.54, 0.42), _row("new", 0, 0.60, 0.47),
                _row("new", 1, 0.61, 0.45), _row("new", 2, 0.65, 0.49)):
        append_row(tmp_path / "results.jsonl", row)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(dict(
        name="s", claim="C9", reference="ref", budget={"epochs": 1}, entries=[{"label": "ref"}, {"label": "new"}])))
    report = write_report(tmp_path)
    text = report.markdown.read_text()
    new_mean, ref_mean = statistics.fmean([60, 61, 65]), 52.0
    assert f"{new_mean:.2f} ± {statistics.stdev([60, 61, 65]):.2f}" in text
    assert f"52.00 ± {statistics.stdev([50, 54]):.2f}" in text
    assert f"{new_mean - ref_mean:+.2f}" in text  # Δ val
    assert "| 60.00 / 61.00 / 65.00 |" in text and "| +10.00 / +7.00 |" in text  # by seed; Δ at seeds both ran
    assert f"{statistics.fmean([47, 45, 49]) - 41:+.2f}" in text  # Δ test
    assert "C9" in text and "| ref |" in text and text.index("| ref |") < text.index("| new |")
    assert "`ref` is ahead of: none; behind: new (1.0× its params)" in text
    assert report.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_partial_studys_report_says_what_has_not_run(tmp_path):
    append_row(tmp_path / "results.jsonl", _row("ref", 0, 0.50))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(dict(
        name="s", claim="C9", reference="ref", budget={"epochs": 1}, seeds=[0, 1],
        entries=[{"label": "ref"}, {"label": "new"}])))
    assert "; 1 runs of 4 planned; not run yet: new." in write_report(tmp_path).markdown.read_text()


def test_report_draws_each_runs_val_curve_when_runs_last_two_epochs_or_more(tmp_path):
    for row in (_row("ref", 0, 0.50), _row("new", 0, 0.60)):
        append_row(tmp_path / "results.jsonl", row)
    (tmp_path / "runs" / "ref-seed0").mkdir(parents=True)
    (tmp_path / "runs" / "ref-seed0" / "metrics.csv").write_text("epoch,step,val_top1\n1,10,0.3\n")
    report = write_report(tmp_path)  # one epoch: nothing to draw
    assert report.curves is None and "curves.png" not in report.markdown.read_text()
    assert not (tmp_path / "curves.png").exists()
    for run, values in (("ref-seed0", (0.3, 0.5)), ("new-seed0", (0.2, 0.4, 0.6))):
        (tmp_path / "runs" / run).mkdir(parents=True, exist_ok=True)
        lines = [f"{e + 1},{10 * (e + 1)},{v}" for e, v in enumerate(values)]
        (tmp_path / "runs" / run / "metrics.csv").write_text("epoch,step,val_top1\n" + "\n".join(lines) + "\n")
    assert epoch_curves(tmp_path, read_rows(tmp_path / "results.jsonl")) == {
        "ref-seed0": [(1.0, 30.0), (2.0, 50.0)], "new-seed0": [(1.0, 20.0), (2.0, 40.0), (3.0, 60.0)]}
    report = write_report(tmp_path)
    assert report.curves == tmp_path / "curves.png" and report.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![every run's val top-1, epoch by epoch](curves.png)" in report.markdown.read_text()


def test_report_of_an_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results in .*run the study into"):
        write_report(tmp_path)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "microdense_cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("changes, shard, message", [
    (dict(epochs=3), None, r"unknown field\(s\) \['epochs'\]"),
    (dict(entries=[{"label": "tiny", "model": "resnet21_cifar"}]), None,
     "unknown model 'resnet21_cifar'; did you mean"),
    (dict(entries=[{"label": "tiny", "model": "darts_v2_cifar", "kwargs": {"layers": 8, "init_channels": 16}},
                   {"model": "microdense_darts_v2_cifar", "kwargs": {"layers": 8}, "params_like": "tiny"}]),
     None, "cannot come within ±3% of 246,106 parameters by init_channels"),
    ({}, "3/2", "shard '3/2' is not I/N"),
])
def test_bad_input_is_one_line_before_any_run(tmp_path, changes, shard, message, cli_here):
    path = write_study(tmp_path, **changes)
    out = tmp_path / "out"
    shard_args = ["--shard", shard] if shard else []
    proc = cli_here("study", "run", str(path), "--out", str(out), "--allow-dirty", *shard_args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()  # nothing was started


def test_study_list_and_report_commands(tmp_path, cli_here):
    proc = cli_here("study", "list")
    assert proc.returncode == 0 and "ablation" in proc.stdout and "C4" in proc.stdout
    starts = {len(line) - len(line.split(maxsplit=1)[1]) for line in proc.stdout.splitlines()}
    assert len(starts) == 1, proc.stdout  # every claim starts in one column, however long its study's name
    append_row(tmp_path / "results.jsonl", _row("a", 0, 0.5))
    proc = cli_here("study", "report", str(tmp_path))
    assert proc.returncode == 0 and "50.00" in proc.stdout and (tmp_path / "report.md").exists()


# smoke forms that train networks of millions of parameters (or ImageNet-sized inputs) and save their checkpoints,
# or many tiny-sized entries: minutes and gigabytes in all, so they run with the slow tests (`.ci/run` runs those)
_HEAVY_SMOKE = {"baselines", "baselines-cpu", "paper-cifar10", "paper-cifar100", "imagenet", "budget-ingredients",
                "group-width", "group-width-time", "nas"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _HEAVY_SMOKE else n
                                  for n in sorted(packaged_studies())])
def test_every_packaged_study_runs_in_its_smoke_form(tmp_path, name):
    study = smoke(load_study(name))
    done = quiet_run(study, tmp_path)
    rows = read_rows(tmp_path / "results.jsonl")
    assert done.ran == len(study.entries) == len(rows)
    assert all(r["steps"] == 2 and r["val_top1"] is not None for r in rows)
    write_report(tmp_path)


def test_the_study_as_run_is_itself_a_study_that_repeats_it(tmp_path):
    out = tmp_path / "out"
    quiet_run(write_study(tmp_path, seeds=[0], entries=STUDY["entries"][::-1]), out)  # params_like before its target
    as_run = load_study(str(out / "study.yaml"))
    assert [e.label for e in as_run.entries] == ["residual", "tiny"]  # the file's order, which the report keeps
    assert "width_multiplier" in as_run.entry("residual").kwargs and as_run.entry("residual").params_like is None
    again = quiet_run(as_run, out)
    assert (again.ran, again.skipped) == (0, 2)  # the same runs: same configurations, nothing to do


def test_the_command_line_runs_a_study_and_records_itself(tmp_path):
    path, out = write_study(tmp_path, seeds=[0], entries=STUDY["entries"][:1]), tmp_path / "out"
    proc = cli("study", "run", str(path), "--out", str(out), "--quiet", "--allow-dirty")
    assert proc.returncode == 0, proc.stderr
    assert "run 1/1 of this shard" in proc.stderr and "1 run(s) done now" in proc.stdout
    [row] = read_rows(out / "results.jsonl")
    assert row["command"] == f"microdense study run {path} --out {out} --quiet --allow-dirty"


@pytest.mark.parametrize("dirty", [True, False])
def test_a_dirty_checkout_is_refused_unless_allowed_and_the_row_says_which(tmp_path, monkeypatch, capsys, dirty):
    import microdense.provenance
    import microdense.study.runner as runner
    import microdense_cli
    state = dict(microdense.provenance.code_state(), dirty=dirty)
    for module in (runner, microdense.provenance):  # what the runner checks, and what each run records
        monkeypatch.setattr(module, "code_state", lambda: state)
    path, out = write_study(tmp_path, seeds=[0], entries=STUDY["entries"][:1]), tmp_path / "out"
    if dirty:
        assert microdense_cli.main(["study", "run", str(path), "--out", str(out), "--quiet"]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert "uncommitted changes" in line and "allow_dirty" in line and not out.exists()
    assert microdense_cli.main(["study", "run", str(path), "--out", str(out), "--quiet", "--allow-dirty"]) == 0
    [row] = read_rows(out / "results.jsonl")
    assert row["provenance"]["code"]["dirty"] is dirty


def test_a_run_another_process_holds_is_left_to_it(tmp_path):
    import fcntl
    import os
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    fd = os.open(out / "runs" / ".tiny-seed0.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a twin of this shard would, while it trains tiny-seed0
    lines = []
    try:
        done = run_study(load_study(str(write_study(tmp_path, seeds=[0]))), out, progress=False,
                         announce=lines.append, allow_dirty=True)
    finally:
        os.close(fd)
    assert done.ran == 1 and [r["run"] for r in read_rows(out / "results.jsonl")] == ["residual-seed0"]
    assert any("tiny-seed0 is running in another process" in line for line in lines)
    assert not (out / "runs" / "tiny-seed0").exists()


def test_a_run_a_twin_finished_after_planning_is_not_trained_again(tmp_path, monkeypatch):
    import microdense.study.runner as runner
    study = load_study(str(write_study(tmp_path, seeds=[0], entries=STUDY["entries"][:1])))
    first = tmp_path / "first"
    quiet_run(study, first)
    [row] = read_rows(first / "results.jsonl")
    out = tmp_path / "out"
    claim = runner._claim

    def twin_finishes_first(run_dir):  # the twin appends its row between our planning and our claim
        append_row(out / "results.jsonl", row)
        return claim(run_dir)

    monkeypatch.setattr(runner, "_claim", twin_finishes_first)
    done = quiet_run(study, out)
    assert done.ran == 0 and read_rows(out / "results.jsonl") == [row]


# --- what a shared machine does to a study: SIGKILL, a second start, a full disk ---------------------------------

LONG = dict(seeds=[0], entries=STUDY["entries"][:1], budget={"steps": 60}, overrides={"run": {"checkpoint_every": 4}})


def _start(path: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "microdense_cli", "study", "run", str(path), "--out", str(out),
                             "--quiet", "--allow-dirty"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    import time
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"ended before {path} appeared: {proc.communicate()[1][-800:]}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_shard_killed_mid_run_resumes_with_no_duplicate_or_torn_row(tmp_path):
    import signal
    path, out = write_study(tmp_path, **LONG), tmp_path / "out"
    proc = _start(path, out)
    _wait_for(out / "runs" / "tiny-seed0" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGKILL)  # no handler runs: the process is gone mid-run
    proc.wait()
    assert not (out / "results.jsonl").exists()
    again = cli("study", "run", str(path), "--out", str(out), "--quiet", "--allow-dirty")
    assert again.returncode == 0, again.stderr
    [row] = read_rows(out / "results.jsonl")  # one whole row, read back as JSON
    assert row["run"] == "tiny-seed0" and row["steps"] == 60
    assert 0 < row["resumed_at_step"] < 60 and row["train_seconds"] > 0
    assert (out / "runs" / "tiny-seed0" / "logs-2").is_dir()  # the second process resumed the first one's run
    assert cli("study", "run", str(path), "--out", str(out), "--quiet", "--allow-dirty").returncode == 0
    assert len(read_rows(out / "results.jsonl")) == 1  # and a third start finds nothing left to do


@pytest.mark.slow
def test_a_second_process_on_the_same_shard_refuses_in_one_line(tmp_path):
    path, out = write_study(tmp_path, **LONG), tmp_path / "out"
    first = _start(path, out)
    try:
        _wait_for(out / "runs" / "tiny-seed0", first)  # the first holds the shard: it has started its run
        second = cli("study", "run", str(path), "--out", str(out), "--quiet", "--allow-dirty")
    finally:
        first.kill()
        first.wait()
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 1 and len(lines) == 1, second.stderr
    assert "shard 0/1 is already running" in lines[0] and "Traceback" not in second.stderr


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG, as ENOSPC would fail it
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
"""


def _with_full_disk(code: str, *args: str, limit: int) -> subprocess.CompletedProcess:
    """Run `code` in a process that may not grow any file past `limit` bytes: a disk that fills mid-write."""
    return subprocess.run([sys.executable, "-c", FULL_DISK + code, *args, str(limit)], capture_output=True, text=True)


def test_a_full_disk_while_a_row_is_written_loses_no_row_and_leaves_no_half_row(tmp_path):
    results = tmp_path / "results.jsonl"
    rows = [_row("a", 0, 0.5), _row("b", 0, 0.6)]
    for row in rows:
        append_row(results, row)
    before = results.read_bytes()
    proc = _with_full_disk("""
from microdense.study.results import append_row
append_row(__import__("pathlib").Path(sys.argv[1]), {"entry": "c", "padding": "x" * 4000})
""", str(results), limit=len(before) + 100)
    assert proc.returncode != 0 and "File too large" in proc.stderr
    assert results.read_bytes() == before and read_rows(results) == rows
    append_row(results, _row("c", 0, 0.7))  # with room again, the next row lands whole
    assert [r["entry"] for r in read_rows(results)] == ["a", "b", "c"]


def test_a_full_disk_while_a_checkpoint_is_written_keeps_the_previous_one(tmp_path):
    import torch
    from microdense.train.checkpoint_io import SafeCheckpointIO
    last = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(10)}, "global_step": 1}, last)
    before = last.read_bytes()
    proc = _with_full_disk("""
import torch
from microdense.train.checkpoint_io import SafeCheckpointIO
SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(100_000)}, "global_step": 2}, sys.argv[1])
""", str(last), limit=len(before) * 4)
    assert proc.returncode != 0 and "File too large" in proc.stderr
    assert last.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left
    assert SafeCheckpointIO().load_checkpoint(last)["global_step"] == 1


def test_a_diverged_run_is_a_row_without_an_accuracy_and_is_never_released(tmp_path):
    from microdense.errors import ConfigError
    from microdense.study.best_seeds import best_seeds
    out = tmp_path / "out"
    entries = [{"label": "tiny", "model": TINY}, {"label": "wild", "model": TINY, "overrides": {"optim.lr": 1e9}}]
    done = quiet_run(write_study(tmp_path, entries=entries, budget={"steps": 6}), out)
    assert done.ran == 4  # a diverged run ends its own run, not the study
    rows = {r["run"]: r for r in read_rows(out / "results.jsonl")}
    for seed in (0, 1):
        wild = rows[f"wild-seed{seed}"]
        assert wild["val_top1"] is None and wild["diverged"]["step"] >= 0 and "diverged" in wild["diverged"]["message"]
        assert wild["provenance"]["code"]["commit"] and rows[f"tiny-seed{seed}"]["val_top1"] is not None
    report = write_report(out)
    table = report.markdown.read_text()
    wild_line = next(line for line in table.splitlines() if line.startswith("| wild "))
    assert "0 (+2 diverged)" in wild_line and "diverged / diverged" in wild_line
    assert [c.label for c in best_seeds(out, ["tiny"])] == ["tiny"]
    with pytest.raises(ConfigError, match="wild: every seed diverged"):
        best_seeds(out, ["wild"])


def test_a_run_that_fails_releases_its_lock(tmp_path, monkeypatch):
    from microdense.study import runner
    out = tmp_path / "out"

    def broken_train(cfg, progress=True):
        raise RuntimeError("a crash inside training")

    monkeypatch.setattr(runner, "train", broken_train)
    with pytest.raises(RuntimeError, match="a crash inside training"):
        quiet_run(write_study(tmp_path, seeds=[0], entries=STUDY["entries"][:1]), out)
    lock = runner._claim(out / "runs" / "tiny-seed0")  # another process (or this one, again) may take the run
    assert lock is not None
