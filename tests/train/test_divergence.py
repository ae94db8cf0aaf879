"""A run that goes wrong says so: the first non-finite loss or gradient norm stops training in one line, with an exit
code of its own, and no non-finite weights reach anything a later command would load."""
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from microdense.errors import TrainingDiverged, WeightsError
from microdense.saved.trained_model import nonfinite
from microdense.saved.weights_source import load_model
from microdense.train.config import resolve_config
from microdense.train.run import train

# a few steps of tiny on a small tree; lr 1e6 sends the loss to inf or NaN within a handful of steps
ARGS = dict(data=dict(name="imagefolder", val_split=0.25, batch_size=8, workers=0),
            run=dict(epochs=3, accelerator="cpu", devices="1", checkpoint_every=1))


def _cfg(tree, out, run=None, **optim):
    return resolve_config({"data": {**ARGS["data"], "root": str(tree)},
                           "run": {**ARGS["run"], "out": str(out), **(run or {})}, "optim": optim})


def test_a_diverging_run_stops_at_the_first_nonfinite_loss_and_keeps_only_finite_weights(image_tree, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as e:
        train(_cfg(image_tree, out, lr=1e6), progress=False)
    message = str(e.value)
    assert "\n" not in message and f"step {e.value.step}" in message and "learning rate" in message
    assert e.value.lr > 0 and "lower optim.lr" in message
    assert not (out / "model.safetensors").exists()  # nothing exported
    last = out / "checkpoints" / "last.ckpt"
    if last.exists():  # every step is checkpointed: the last one saved holds the weights before the bad step
        state = torch.load(last, map_location="cpu", weights_only=True)
        assert nonfinite(state["state_dict"]) == [] and state["global_step"] <= e.value.step
        assert f"{last} keeps the last weights saved before it (step {state['global_step']})" in message
    else:
        assert "no checkpoint had been saved" in message


def test_a_nonfinite_gradient_norm_stops_the_run_where_clipping_computes_it(image_tree, tmp_path, monkeypatch):
    import timm

    real = timm.create_model

    def with_a_poisoned_gradient(*args, **kwargs):
        model = real(*args, **kwargs)
        model.head.fc.weight.register_hook(lambda g: torch.full_like(g, float("inf")))  # the loss stays finite
        return model

    monkeypatch.setattr(timm, "create_model", with_a_poisoned_gradient)
    with pytest.raises(TrainingDiverged, match=r"at step 0: gradient norm inf"):
        train(_cfg(image_tree, tmp_path / "run", grad_clip=1.0), progress=False)


def test_the_command_line_says_so_in_one_line_with_exit_code_3(image_tree, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "microdense_cli", "train", "--data", "imagefolder", "--data-dir",
                           str(image_tree), "--val-split", "0.25", "--batch-size", "8", "--epochs", "3",
                           "--lr", "1e6", "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("microdense: error:")]
    assert len(errors) == 1 and "training diverged at step" in errors[0] and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not (out / "model.safetensors").exists()


def test_a_diverged_run_starts_again_in_the_same_folder_with_nothing_lost(image_tree, tmp_path, cli_here):
    out = tmp_path / "run"
    args = ["train", "--data", "imagefolder", "--data-dir", str(image_tree), "--val-split", "0.25", "--batch-size", "8",
            "--epochs", "3", "--set", "run.checkpoint_every=1", "--out", str(out), "--quiet"]
    diverged = cli_here(*args, "--lr", "1e6")
    assert diverged.returncode == 3, diverged.stderr
    assert diverged.stderr.strip().endswith("start again in the same folder with run.restart (--restart), which moves "
                                            f"what it holds into {out / 'previous-1'}")
    held = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli_here(*args, "--lr", "0.05").returncode == 1  # a plain rerun is still refused: it would mix two runs
    assert cli_here(*args, "--lr", "0.05", "--resume", "--restart").returncode == 2
    again = cli_here(*args, "--lr", "0.05", "--max-steps", "2", "--restart")
    assert again.returncode == 0, again.stderr
    assert {p: (out / "previous-1" / p).read_bytes() for p in held} == held  # the diverged run, moved aside whole
    assert (out / "model.safetensors").is_file() and not (out / "previous-2").exists()
    saved = resolve_config({}, str(out / "config.yaml"))
    assert saved.optim.lr == 0.05 and not saved.run.restart  # a later --resume continues this run


def test_weights_holding_nan_are_refused_by_every_loader(image_tree, tmp_path, cli_here):
    run = tmp_path / "run"
    train(_cfg(image_tree, run, run=dict(max_steps=1)), progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((run / "config.json").read_text())
    state = load_file(str(run / "model.safetensors"))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(WeightsError, match=rf"holds NaN or inf \({name}.*its run diverged"):
        load_model(bad)
    for command in (["eval", "--checkpoint", str(bad), "--data", "imagefolder", "--data-dir", str(image_tree)],
                    ["export", "--checkpoint", str(bad), "--format", "onnx"],
                    ["train", "--init-from", str(bad), "--epochs", "1"]):
        proc = cli_here(*command)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "holds NaN or inf" in lines[0], (command, proc.stderr)
