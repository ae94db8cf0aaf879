"""`microdense train` and `microdense eval` end to end on small image trees the tests make."""
import json
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings

import lightning.pytorch as pl
import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from microdense_cli import main
from microdense.io import default_mode
from microdense.saved.run_folder import read_metrics
from microdense.train.config import resolve_config
from microdense.train.run import train
from microdense.train.system import lr_factor

TRAIN = ["train", "--data", "imagefolder", "--val-split", "0.25", "--batch-size", "8", "--epochs", "2",
         "--accelerator", "cpu", "--devices", "1"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "microdense_cli", *args], capture_output=True, text=True)


def assert_one_line_error(proc: subprocess.CompletedProcess, text: str, code: int) -> None:
    """Exit status `code` (2: a bad value, 1: a path), and stderr exactly one line: the error, holding `text`."""
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microdense: error:") and text in lines[0], proc.stderr


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import make_image_tree
    base = tmp_path_factory.mktemp("trained")
    tree = make_image_tree(base / "images")
    out = base / "run"
    assert main([*TRAIN, "--data-dir", str(tree), "--out", str(out)]) == 0
    return tree, out


def test_run_folder_holds_everything(trained_run):
    _, out = trained_run
    for name in ("config.yaml", "metrics.csv", "curves.png", "model.safetensors", "config.json",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        assert 0 < float(row["train_loss"]) < 10 and 0 < float(row["val_loss"]) < 10
        # val accuracy is a count of the 12 held-out images
        assert float(row["val_top1"]) * 12 == pytest.approx(round(float(row["val_top1"]) * 12), abs=1e-4)
        assert float(row["val_top1"]) <= float(row["val_top5"]) == 1.0  # 4 classes: the top 5 always holds the label
        assert 0 < float(row["lr"]) <= 0.2
    # each epoch's rate is its images over its training seconds: validation (paused on the clock) is not in it
    for before, row in zip([{"step": 0, "train_s": 0.0}, *rows], rows):
        images, seconds = (int(row["step"]) - int(before["step"])) * 8, float(row["train_s"]) - float(before["train_s"])
        assert float(row["img_s"]) == pytest.approx(images / seconds, rel=1e-6)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name"] == "microdensenet_cifar_tiny"
    # what made the run, in its config.yaml and in the export's config.json alike
    made = yaml.safe_load((out / "config.yaml").read_text())["provenance"]
    assert made == json.loads((out / "config.json").read_text())["microdense"]["provenance"]
    assert made["code"]["commit"] and made["versions"]["timm"] and made["machine"]["threads"] >= 1
    assert made["data"]["name"] == "imagefolder" and made["data"]["per_class"] == {f"class{c}": 12 for c in range(4)}
    assert made["data"]["hashed"] == "file list" and len(made["data"]["sha256"]) == 64
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    # readable by the team: every file as a plain open() under this umask would make it
    for name in ("model.safetensors", "config.json", "config.yaml", "metrics.csv", "curves.png",
                 "checkpoints/last.ckpt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == default_mode(), name


def test_eval_reproduces_final_validation_accuracy(trained_run, tmp_path, capsys):
    tree, out = trained_run
    plot = tmp_path / "confusion.png"
    assert main(["eval", "--checkpoint", str(out), "--data", "imagefolder", "--data-dir", str(tree),
                 "--val-split", "0.25", "--json", "--per-class", "--plot", str(plot), "--accelerator", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["images"] == 12  # 25% of 4 classes x 12 images
    assert set(result) >= {"top1", "top5", "loss", "images"}
    final = read_metrics(out / "metrics.csv")[-1]
    assert result["top1"] == pytest.approx(float(final["val_top1"]), abs=1e-6)
    assert result["loss"] == pytest.approx(float(final["val_loss"]), rel=1e-4)
    assert set(result["per_class"]) == {"class0", "class1", "class2", "class3"}
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # the Lightning checkpoint gives the same model as the export
    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", "imagefolder",
                 "--data-dir", str(tree), "--val-split", "0.25", "--json", "--accelerator", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"] == result["top1"]


def test_eval_prints_no_third_party_noise(trained_run):
    tree, out = trained_run
    proc = run_cli("eval", "--checkpoint", str(out), "--data", "imagefolder", "--data-dir", str(tree), "--val-split",
                   "0.25", "--accelerator", "cpu")
    assert proc.returncode == 0, proc.stderr
    for noise in ("litlogger", "LeafSpec"):
        assert noise not in proc.stdout + proc.stderr, noise


def test_eval_flip_averages_each_image_with_its_mirror(trained_run, capsys):
    from microdense.data.config import DataCfg
    from microdense.saved.weights_source import load_model
    from microdense.train.datamodule import ImageDataModule
    tree, out = trained_run
    common = ["eval", "--checkpoint", str(out), "--data", "imagefolder", "--data-dir", str(tree), "--val-split",
              "0.25", "--json", "--accelerator", "cpu"]
    assert main(common) == 0 and main([*common, "--flip"]) == 0
    plain, flipped = (json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{"))
    loaded = load_model(out)
    data = ImageDataModule(DataCfg(name="imagefolder", root=str(tree), val_split=0.25), loaded.model.num_classes,
                           mean_std=(loaded.info.mean, loaded.info.std))
    data.setup("validate")
    x, y = data.on_after_batch_transfer(next(iter(data.val_dataloader())), 0)  # all 12 images in one batch
    model = loaded.model.eval()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy((model(x) + model(x.flip(3))) / 2, y)
        unflipped = torch.nn.functional.cross_entropy(model(x), y)
    assert len(y) == 12 and flipped["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert plain["loss"] == pytest.approx(float(unflipped), rel=1e-5) != flipped["loss"]


def test_timm_loads_the_export(trained_run):
    _, out = trained_run
    import microdense  # noqa: F401
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    state = load_file(str(out / "model.safetensors"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    assert tuple(model.pretrained_cfg["input_size"]) == (3, 16, 16)
    assert model.num_classes == 4


def test_refuses_to_overwrite_a_run(trained_run, cli_here):
    tree, out = trained_run
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts}
    proc = cli_here(*TRAIN, "--data-dir", str(tree), "--out", str(out))
    assert_one_line_error(proc, "already holds a run; resume it (run.resume), start it anew (run.restart: it moves "
                                f"into {out / 'previous-1'}), or choose another run folder", 1)
    after = {p: p.read_bytes() for p in before}
    assert after == before


def test_truncated_and_corrupt_checkpoints_are_refused(trained_run, tmp_path, cli_here):
    tree, out = trained_run
    for name in ("last.ckpt", "model.safetensors"):
        source = out / ("checkpoints" if name.endswith("ckpt") else "") / name
        bad_dir = tmp_path / name.replace(".", "_")
        bad_dir.mkdir()
        bad = bad_dir / name
        data = source.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        if name.endswith("safetensors"):
            (bad_dir / "config.json").write_bytes((out / "config.json").read_bytes())
        proc = cli_here("eval", "--checkpoint", str(bad), "--data", "imagefolder", "--data-dir", str(tree))
        assert_one_line_error(proc, "is truncated or corrupt", 2)


def test_a_run_folder_without_its_weights_is_one_line_naming_the_fix(trained_run, tmp_path, cli_here):
    tree, out = trained_run
    image = next(tree.glob("*/*.png"))
    kept = tmp_path / "kept"  # a committed study's run folder: its configuration and curves, no weights
    kept.mkdir()
    for name in ("config.yaml", "config.json", "metrics.csv"):
        (kept / name).write_bytes((out / name).read_bytes())
    proc = cli_here("predict", "--checkpoint", str(kept), str(image))
    assert_one_line_error(proc, f"{kept} holds no weights (no model.safetensors); train it again (microdense train "
                                f"--config {kept / 'config.yaml'} --out NEW_FOLDER)", 1)
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "last.ckpt").write_bytes((out / "checkpoints" / "last.ckpt").read_bytes())
    proc = cli_here("predict", "--checkpoint", str(unfinished), str(image))
    assert_one_line_error(proc, f"load its checkpoint {unfinished / 'checkpoints' / 'last.ckpt'}", 1)


def test_the_closing_line_of_a_resumed_run_says_what_its_seconds_count(tmp_path, cli_here):
    args = ["train", "--data", "synthetic", "--set", "data.limit_images=8", "--batch-size", "4", "--accelerator",
            "cpu", "--devices", "1", "--out", str(tmp_path / "run"), "--quiet"]
    first = cli_here(*args, "--max-steps", "2")
    assert first.returncode == 0 and re.search(r"steps, \d+s training \(\d+s in all\);", first.stdout), first.stdout
    resumed = cli_here(*args, "--max-steps", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"steps, \d+s training in all, \d+s of wall time since the resume at step 2;", resumed.stdout), \
        resumed.stdout


class _RunsCode:
    """An object whose unpickling would call a function: what `weights_only` exists to refuse."""

    def __reduce__(self):
        return (print, ("this line must never appear",))


def test_a_checkpoint_holding_code_is_refused_for_safety_not_called_corrupt(trained_run, tmp_path):
    tree, out = trained_run
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["callbacks"] = _RunsCode()
    torch.save(ckpt, tmp_path / "unsafe.ckpt")
    proc = run_cli("eval", "--checkpoint", str(tmp_path / "unsafe.ckpt"), "--data", "imagefolder", "--data-dir",
                   str(tree))
    assert_one_line_error(proc, "was refused for safety, not loaded", 2)
    assert "(it names print)" in proc.stderr
    assert "must never appear" not in proc.stdout + proc.stderr and "corrupt" not in proc.stderr


@pytest.mark.parametrize("args, text, code", [
    (["--model", "microdensenet_cifar_tin"], "unknown model 'microdensenet_cifar_tin'; did you mean", 2),
    (["--data-dir", "/nonexistent/folder"], "data folder /nonexistent/folder does not exist", 1),
    (["--data-dir", __file__], f"data folder {__file__} is a file, not a folder; point data.root (--data-dir) at", 1),
    (["--config", "/nonexistent/my.yaml"], "config file /nonexistent/my.yaml does not exist", 1),
    (["--num-classes", "2"], "num_classes 2 is smaller than the 4 classes found", 2),
    (["--model", "darts_cifar", "--genotype", '{"normal": [], "reduce": []}'], "normal cell has 0 entries", 2),
    (["--model", "microdensenet_cifar_tiny", "--set", "model.kwargs={base_width: 12}"],
     "MicroDenseBlockCfg.base_width: 12 is not divisible by group_width 8", 2),
])
def test_bad_training_input_is_one_line(image_tree, tmp_path, args, text, code, cli_here):
    base = [*TRAIN, "--data-dir", str(image_tree), "--out", str(tmp_path / "run")]
    proc = cli_here(*base, *args)
    assert_one_line_error(proc, text, code)


@pytest.mark.parametrize("model, recipe",
                         [("densenet_bc100_k12_cifar", "paper"), ("microdense_darts_v2_cifar", "darts")])
def test_baselines_and_nas_models_train_with_their_recipes(tmp_path, model, recipe):
    from conftest import make_image_tree
    tree = make_image_tree(tmp_path / "images", classes=3, per_class=4, size=32)  # DARTS's aux head needs 32 px
    out = tmp_path / "run"
    assert main(["train", "--model", model, "--recipe", recipe, "--data", "imagefolder", "--data-dir", str(tree),
                 "--val-split", "0.25", "--batch-size", "4", "--max-steps", "2", "--out", str(out),
                 "--accelerator", "cpu", "--devices", "1"]) == 0
    assert (out / "model.safetensors").is_file()
    assert f"recipe: {recipe}" in (out / "config.yaml").read_text()


def test_a_model_argument_the_model_lacks_is_one_line(image_tree, tmp_path, cli_here):
    proc = cli_here(*TRAIN, "--data-dir", str(image_tree), "--out", str(tmp_path / "run"),
                   "--model", "densenet_bc100_k12_cifar", "--set", "model.drop_path_rate=0.1")
    assert_one_line_error(proc, "cannot build densenet_bc100_k12_cifar", 2)


def test_empty_data_folder_and_resume_without_run(tmp_path, cli_here):
    (tmp_path / "empty").mkdir()
    proc = cli_here(*TRAIN, "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "has no class sub-folders", 2)
    proc = cli_here("train", "--out", str(tmp_path / "nothing"), "--resume")
    assert_one_line_error(proc, "nothing to resume", 1)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import lightning.pytorch as pl
    from microdense.train.config import resolve_config
    from microdense.train.run import train

    class KillAt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, like a lost machine

    cfg = resolve_config({"data.name": "imagefolder", "data.root": sys.argv[1], "data.val_split": 0.25,
                          "data.batch_size": 8, "run.epochs": 2, "run.accelerator": "cpu", "run.devices": "1",
                          "run.deterministic": True, "run.checkpoint_every": 1, "run.out": sys.argv[3],
                          "run.time_budget": float(sys.argv[4]) if len(sys.argv) > 4 else None})
    train(cfg, callbacks=[KillAt()])
""")


def test_resume_after_kill_matches_uninterrupted_run(image_tree, tmp_path):
    common = [*TRAIN, "--data-dir", str(image_tree), "--set", "run.deterministic=true",
              "--set", "run.checkpoint_every=1"]
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0

    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, str(script), str(image_tree), "3", str(killed)], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    ckpt = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert 0 < ckpt["global_step"] < 4, "the kill must land mid-epoch (4 steps per epoch)"
    assert not (killed / "model.safetensors").exists()

    assert main(["train", "--out", str(killed), "--resume"]) == 0
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(killed / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


class RecordLearningRates(pl.Callback):
    """The learning rate every optimizer step runs at, and the training seconds the run started from."""

    def __init__(self):
        self.lrs, self.started_at = [], None

    def on_train_start(self, trainer, pl_module):
        self.started_at = pl_module.progress.elapsed

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


def test_time_budget_stops_the_run_at_the_schedules_final_learning_rate(image_tree, tmp_path):
    budget_min = 0.05  # 3 s of training; 1000 epochs would take minutes
    cfg = resolve_config({"recipe": "budget", "data.name": "imagefolder", "data.root": str(image_tree),
                          "data.val_split": 0.25, "data.batch_size": 8, "run.epochs": 1000,
                          "run.time_budget": budget_min,
                          "run.accelerator": "cpu", "run.devices": "1", "run.out": str(tmp_path / "run")})
    assert cfg.run.channels_last and cfg.optim.warmup_fraction > 0
    record = RecordLearningRates()
    result = train(cfg, callbacks=[record], progress=False)
    assert 0 < result.steps < 4000 and len(record.lrs) == result.steps
    peak_lr = cfg.optim.lr * 8 / 128  # the recipe's rate is per 128 images; this run's steps take 8
    assert record.lrs[-1] == pytest.approx(peak_lr * lr_factor(cfg.optim, 1.0, 0.0)) == pytest.approx(peak_lr / 25_000)
    assert all(lr > record.lrs[-1] for lr in record.lrs[:-1]), "the final value is reached at the last step only"
    peak = record.lrs.index(max(record.lrs))
    assert all(a >= b for a, b in zip(record.lrs[peak:], record.lrs[peak + 1:])), "anneals after the peak"
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert int(rows[-1]["step"]) == result.steps and rows[-1]["val_top1"] != "", "the final weights are validated"
    assert float(rows[-1]["train_s"]) == pytest.approx(result.train_seconds)
    assert result.seconds > result.train_seconds > 0
    assert result.epochs == pytest.approx(result.steps / 4)
    assert result.train_img_s == pytest.approx(result.steps * 8 / result.train_seconds)  # the whole run's rate
    assert load_file(str(tmp_path / "run" / "model.safetensors")).keys()  # a channels_last model exports too


def test_resume_keeps_the_training_seconds_already_spent(image_tree, tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, str(script), str(image_tree), "3", str(killed), "10"], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    saved = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["microdense_progress"]
    assert saved["elapsed"] > 0

    cfg = resolve_config({"run.out": str(killed), "run.resume": True}, str(killed / "config.yaml"))
    assert cfg.run.time_budget == 10
    record = RecordLearningRates()
    result = train(cfg, callbacks=[record], progress=False)
    assert record.started_at == saved["elapsed"]
    assert result.train_seconds > saved["elapsed"] and result.steps == 8
    # the resumed part writes its step-level log beside the first part's
    assert (killed / "logs").is_dir() and (killed / "logs-2" / "metrics.csv").is_file()


def test_ctrl_c_saves_last_checkpoint_and_resumes(image_tree, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "microdense_cli", *TRAIN, "--data-dir", str(image_tree), "--out", str(out),
           "--batch-size", "4", "--epochs", "100", "--set", "run.checkpoint_every=1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last.exists(), "training never saved a checkpoint"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert f"Continue with: microdense train --out {out} --resume" in stderr
    step = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step < 900 and not (out / "model.safetensors").exists()

    assert main(["train", "--out", str(out), "--resume", "--max-steps", str(step + 2), "--quiet"]) == 0
    assert torch.load(last, weights_only=True)["global_step"] == step + 2
    assert (out / "model.safetensors").is_file()


def test_quiet_prints_the_closing_line_only_and_runs_carry_no_noise(image_tree, tmp_path):
    args = [*TRAIN, "--data-dir", str(image_tree), "--max-steps", "2"]
    quiet = run_cli(*args, "--out", str(tmp_path / "quiet"), "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert len(quiet.stdout.strip().splitlines()) == 1 and quiet.stdout.startswith("done: ")
    assert "0.50 epochs / 2 steps" in quiet.stdout and "val top-1 n/a" not in quiet.stdout  # validated at the stop
    assert "GPU available" not in quiet.stderr and "decoding" not in quiet.stderr
    loud = run_cli(*args, "--out", str(tmp_path / "loud"))
    assert loud.returncode == 0, loud.stderr
    shown = loud.stdout + loud.stderr
    for noise in ("litlogger", "LeafSpec", "v_num", "FLOPs"):
        assert noise not in shown, noise
    assert "microdensenet_cifar_tiny: 0.259M parameters, 10.9M MACs per 3x16x16 image, 4 classes" in shown


def test_runs_carry_no_advice_that_does_not_apply(image_tree, tmp_path, monkeypatch):
    # The small-image pipeline's batches are slices of one tensor, with no workers on purpose: Lightning advises more
    # where cores abound (16 on the GPU machine). And an EMA of the weights is a module kept in eval mode on purpose.
    import lightning.pytorch.trainer.connectors.data_connector as connector
    monkeypatch.setattr(connector, "suggested_max_num_workers", lambda devices: 15)
    cfg = resolve_config({"data.name": "imagefolder", "data.root": str(image_tree), "data.val_split": 0.25,
                          "data.batch_size": 8, "run.max_steps": 1, "optim.ema_decay": 0.99, "run.accelerator": "cpu",
                          "run.devices": "1", "run.out": str(tmp_path / "run")})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, progress=False)
    shown = [str(w.message) for w in caught]
    assert not [m for m in shown if "does not have many workers" in m or "in eval mode at the start" in m], shown


def test_training_leaves_the_callers_warning_filters_and_log_filters_as_they_were(image_tree, tmp_path):
    import logging
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    filters, log_filters = list(warnings.filters), list(lightning_log.filters)
    cfg = resolve_config(dict(data=dict(name="imagefolder", root=str(image_tree), val_split=0.25, batch_size=8),
                              run=dict(max_steps=1, accelerator="cpu", devices="1", out=str(tmp_path / "run"),
                                       resume=False)))
    train(cfg, progress=False)
    assert warnings.filters == filters and lightning_log.filters == log_filters


def test_large_images_are_cropped_to_the_models_input_size_unless_img_size_says_otherwise(tmp_path, caplog,
                                                                                          cli_here):
    """As timm's resolve_data_config: 80 px photos train a 32x32 CIFAR model at 32x32, not at a default 224."""
    from conftest import make_image_tree
    tree = make_image_tree(tmp_path / "photos", per_class=4, size=80)
    args = [*TRAIN, "--data-dir", str(tree), "--max-steps", "1"]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("INFO", logger="microdense"):
        warnings.simplefilter("always")
        assert cli_here(*args, "--out", str(tmp_path / "own")).returncode == 0
        assert cli_here(*args, "--out", str(tmp_path / "set"), "--set", "data.img_size=96").returncode == 0
    own, larger = (json.loads((tmp_path / run / "config.json").read_text())["pretrained_cfg"]["input_size"]
                   for run in ("own", "set"))
    assert own == [3, 32, 32] and larger == [3, 96, 96]
    first = [r.getMessage() for r in caplog.records if "MACs per" in r.getMessage()]
    assert "MACs per 3x32x32 image, 4 classes" in first[0]
    assert "MACs per 3x96x96 image (9x the MACs of the model's own 32x32 input: data.img_size), 4 classes" in first[1]
    assert not [w for w in caught if "worker" in str(w.message)]  # the loaders' workers are what the machine has
