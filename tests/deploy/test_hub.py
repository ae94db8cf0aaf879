"""Releases in the layout the model hubs use: written by timm's save_for_hf, read back by
timm.create_model("local-dir:FOLDER"), with the same logits as the source, a card the hubs index, and no half-written
folder after a fault."""
import json

import pytest
import timm
import torch
import yaml

import microdense  # noqa: F401  (registers the models)
from microdense.deploy import hub
from microdense.deploy.hub import write_hub_folder
from microdense.models._pretrained import released
from microdense.saved.weights_source import load_model
from microdense.train.config import resolve_config
from microdense.train.run import train
from microdense_cli import main

RELEASE = "microdensenet_cifar_tiny.cifar10"


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    return yaml.safe_load(readme.split("---\n")[1])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


NO_RELEASE = pytest.mark.skipif(released("microdensenet_cifar_tiny", "cifar10") is None,
                                reason="no shipped tiny release")


@NO_RELEASE
def test_a_shipped_release_in_the_hub_layout_loads_through_timm_with_the_same_logits(tmp_path, capsys):
    out = tmp_path / RELEASE
    assert main(["export", "--checkpoint", RELEASE, "--format", "hub", "--out", str(out)]) == 0
    assert "local-dir:" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "microdensenet_cifar_tiny" and config["num_classes"] == 10
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["crop_pct"] == 1.0 and len(cfg["mean"]) == 3
    assert config["label_names"][:2] == ["airplane", "automobile"]
    packaged = timm.create_model("microdensenet_cifar_tiny", pretrained=True)
    from_folder = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert (_logits(from_folder) - _logits(packaged)).abs().max() <= 1e-6
    readme = (out / "README.md").read_text()
    meta = _front_matter(readme)
    assert meta["library_name"] == "timm" and {"image-classification", "timm", "microdense"} <= set(meta["tags"])
    assert meta["datasets"] == ["cifar10"] and meta["metrics"] == ["accuracy"] and meta["license"] == "apache-2.0"
    assert "88.64% / 99.56%" in readme and "local-dir:FOLDER" in readme  # the packaged card's figures and loading
    # microdense takes the exported folder as a run
    assert list(load_model(out).info.classes) == list(packaged.pretrained_cfg["label_names"])


def test_a_width_scaled_run_round_trips_through_its_model_args(image_tree, tmp_path):
    run = tmp_path / "run"
    cfg = resolve_config(dict(model=dict(kwargs=dict(width_multiplier=0.5)),
                              data=dict(name="imagefolder", root=str(image_tree), val_split=0.25, batch_size=8),
                              run=dict(max_steps=2, accelerator="cpu", devices="1", out=str(run))))
    train(cfg, progress=False)
    out = tmp_path / "scaled"
    write_hub_folder(str(run), out, command="microdense train --set model.kwargs.width_multiplier=0.5 ...")
    assert json.loads((out / "config.json").read_text())["model_args"]["width_multiplier"] == 0.5
    from_folder = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert (_logits(from_folder) - _logits(load_model(run).model)).abs().max() <= 1e-6
    assert "datasets" not in _front_matter((out / "README.md").read_text())  # an image folder names no hub dataset


@NO_RELEASE
def test_a_fault_while_writing_leaves_no_folder_behind(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub, "atomic_write_text", fail)
    out = tmp_path / "release"
    with pytest.raises(OSError, match="No space left"):
        write_hub_folder(RELEASE, out)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary twin


@NO_RELEASE
def test_an_existing_folder_or_an_unknown_source_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["export", "--checkpoint", RELEASE, "--format", "hub", "--out", str(tmp_path / "taken")]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["export", "--checkpoint", "no-such-run", "--format", "hub", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a run folder nor a released name" in err


def test_a_run_folder_microdense_train_made_exports_to_the_hub_layout_with_no_extra_flag(tmp_path, cli_here):
    run = tmp_path / "run"
    train_args = ["train", "--data", "synthetic", "--max-steps", "2", "--batch-size", "4", "--set",
                  "data.limit_images=8", "--accelerator", "cpu", "--devices", "1", "--out", str(run), "--quiet"]
    assert cli_here(*train_args).returncode == 0
    proc = cli_here("export", "--checkpoint", str(run), "--format", "hub", "--out", str(tmp_path / "hub"))
    assert proc.returncode == 0, proc.stderr
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "microdense train --data synthetic --max-steps 2" in card and f"--out {run}" in card  # how to repeat it
    resumed = cli_here(*train_args[:4], "3", *train_args[5:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "--resume" not in (run / "command").read_text()  # a resumed run keeps the command that started it


def test_an_exported_config_carries_the_runs_labels_and_data_tag_not_the_default_releases(image_tree, tmp_path,
                                                                                          capsys):
    run, out = tmp_path / "run", tmp_path / "hub"
    assert main(["train", "--data", "imagefolder", "--data-dir", str(image_tree), "--max-steps", "1", "--batch-size",
                 "8", "--accelerator", "cpu", "--devices", "1", "--quiet", "--out", str(run)]) == 0
    assert main(["export", "--checkpoint", str(run), "--format", "hub", "--out", str(out), "--command", "train"]) == 0
    for folder in (run, out):
        config = json.loads((folder / "config.json").read_text())
        labels = [f"class{c}" for c in range(4)]
        assert config["label_names"] == config["pretrained_cfg"]["label_names"] == labels, folder
        assert config["pretrained_cfg"]["tag"] == "imagefolder" and config["pretrained_cfg"]["num_classes"] == 4
    assert timm.create_model(f"local-dir:{out}", pretrained=True).pretrained_cfg["label_names"] == labels
