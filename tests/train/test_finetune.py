"""A trained run released (`release_weights`) into a weights folder of the test's own, then loaded as users load it
(timm, `predict`, `eval`, `export`) and fine-tuned from (`--init-from`, `--pretrained`)."""
import json
import subprocess
import sys

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

import microdense  # noqa: F401  (registers the models)
from conftest import make_image_tree
from microdense.data.config import DataCfg
from microdense.data.pipeline import ImagePipeline
from microdense.deploy.release import release_weights
from microdense.models import _pretrained
from microdense.models._pretrained import read_release
from microdense.saved.run_folder import read_metrics
from microdense.saved.weights_source import init_from

TRAIN = ["train", "--data", "imagefolder", "--val-split", "0.25", "--batch-size", "8", "--accelerator", "cpu",
         "--devices", "1", "--quiet"]
NAME = "microdensenet_cifar_tiny.cifar10"
COMMAND = "microdense train --data imagefolder --data-dir images --val-split 0.25 --batch-size 8 --epochs 2"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(image tree, run folder, weights folder holding the run's release)."""
    from microdense_cli import main
    base = tmp_path_factory.mktemp("release")
    tree = make_image_tree(base / "images")
    run = base / "run"
    assert main([*TRAIN, "--epochs", "2", "--data-dir", str(tree), "--out", str(run)]) == 0
    (run / "command").write_text(COMMAND + "\n")
    release_weights(run, "cifar10", out_dir=base / "weights")
    return tree, run, base / "weights"


@pytest.fixture
def weights(released, monkeypatch):
    monkeypatch.setattr(_pretrained, "weights_dir", lambda: released[2])
    return released[2]


def test_the_release_holds_float32_weights_its_record_and_a_card(released):
    tree, run, folder = released
    path = folder / f"{NAME}.safetensors"
    state, source = load_file(str(path)), load_file(str(run / "model.safetensors"))
    assert state.keys() == source.keys() and all(torch.equal(state[k], source[k]) for k in state)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    meta, info = read_release(path), json.loads((run / "config.json").read_text())["microdense"]
    assert (meta["architecture"], meta["tag"], meta["classes"]) == ("microdensenet_cifar_tiny", "cifar10",
                                                                    info["classes"])
    assert list(meta["mean"]) == info["mean"] and list(meta["input_size"]) == info["input_size"]
    assert meta["num_classes"] == 4 and meta["crop_pct"] == 1.0
    record = meta["record"]
    assert record["val_top1"] == info["metrics"]["val_top1"] and record["val_top5"] == info["metrics"]["val_top5"]
    assert record["commit"] == info["provenance"]["code"]["commit"] and record["command"] == COMMAND
    assert (record["recipe"], record["epochs"], record["seed"]) == ("fast", 2, 0)
    assert record["data"]["sha256"] == info["provenance"]["data"]["sha256"] and record["data"]["images"] == 48
    card = (folder / f"{NAME}.md").read_text()
    for text in (f"# {NAME}", f"imagefolder at `{tree}`: 48 images (4 classes), 0.25 of them held out",
                 info["provenance"]["data"]["sha256"],
                 "| recipe | fast: lr ", "| epochs | 2 (", "| seed | 0 |", info["provenance"]["code"]["commit"],
                 f"| val top-1 / top-5 (the held-out images) | {100 * record['val_top1']:.2f}% / 100.00%", COMMAND):
        assert text in card, text
    with pytest.raises(FileExistsError, match="exists already"):
        release_weights(run, "cifar10", out_dir=folder)


def test_release_refuses_a_bad_tag_and_a_missing_command(released, tmp_path):
    _, run, _ = released
    with pytest.raises(ValueError, match="release tag 'CIFAR.10' must be"):
        release_weights(run, "CIFAR.10", out_dir=tmp_path, command="x")
    with pytest.raises(ValueError, match="no command for"):
        release_weights(run, "cifar10", out_dir=tmp_path, command=" ")


def test_timm_loads_the_trained_release_exactly(released, weights):
    _, run, _ = released
    source = load_file(str(run / "model.safetensors"))
    model = timm.create_model("microdensenet_cifar_tiny", pretrained=True)
    assert model.state_dict().keys() == source.keys()
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())
    cfg, info = model.pretrained_cfg, json.loads((run / "config.json").read_text())["microdense"]
    assert list(cfg["label_names"]) == info["classes"] and cfg["num_classes"] == 4 and cfg["crop_pct"] == 1.0
    assert list(cfg["mean"]) == info["mean"] and list(cfg["std"]) == info["std"]
    assert list(cfg["input_size"]) == info["input_size"]
    three = timm.create_model("microdensenet_cifar_tiny", pretrained=True, num_classes=3)
    assert three.get_classifier().out_features == 3
    assert all(torch.equal(v, source[k]) for k, v in three.state_dict().items() if not k.startswith("head.fc."))


def test_predict_eval_and_export_take_a_released_name(released, weights, tmp_path, monkeypatch, capsys):
    from microdense_cli import main
    tree, run, _ = released
    image = tree / "class2" / "0.png"
    assert main(["predict", "--checkpoint", NAME, str(image), "--json"]) == 0
    [pred] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert pred["path"] == str(image) and {t["label"] for t in pred["top"]} <= {f"class{c}" for c in range(4)}
    for checkpoint in (NAME, "microdensenet_cifar_tiny"):  # the bare name: the model's default tag
        # its own data, by the fingerprint its release records: the images its run held out, as it held them out
        assert main(["eval", "--checkpoint", checkpoint, "--data", "imagefolder", "--data-dir", str(tree),
                     "--json", "--accelerator", "cpu"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["images"] == 12 and result["scored"].endswith("as the run held them out (val_split 0.25, seed 0)")
        assert result["top1"] == pytest.approx(float(read_metrics(run / "metrics.csv")[-1]["val_top1"]), abs=1e-6)
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--checkpoint", NAME, "--format", "onnx"]) == 0
    assert (tmp_path / f"{NAME}.onnx").is_file()


def test_a_name_without_a_release_and_a_truncated_release_are_one_line(released, tmp_path, monkeypatch, capsys):
    from microdense_cli import main
    tree, _, folder = released
    broken = tmp_path / "weights"
    broken.mkdir()
    data = (folder / f"{NAME}.safetensors").read_bytes()
    (broken / f"{NAME}.safetensors").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(_pretrained, "weights_dir", lambda: broken)
    image = str(tree / "class0" / "0.png")
    for argv, text in (
            (["predict", "--checkpoint", NAME, image], "truncated or corrupt"),
            (["predict", "--checkpoint", "resnet20_cifar.cifar10", image], "resnet20_cifar.cifar10 has no released "
                                                                          "weights"),
            ([*TRAIN, "--epochs", "1", "--data-dir", str(tree), "--out", str(tmp_path / "run"), "--model",
              "resnet20_cifar", "--pretrained"], "ModelCfg.pretrained: resnet20_cifar has no released weights")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("microdense: error:") and text in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.fixture
def weights_at_start(monkeypatch):
    """The network's state when training starts (before any step), captured from `microdense train` by a callback."""
    import lightning.pytorch as pl

    import microdense.train.run as run_module
    seen = {}

    class Capture(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.update({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    train = run_module.train
    monkeypatch.setattr(run_module, "train", lambda cfg, callbacks=(), progress=True, command=None:
                        train(cfg, [Capture()], progress, command))
    return seen


@pytest.mark.parametrize("start", ["init-from", "pretrained"])
def test_fine_tuning_starts_from_the_source_with_a_new_classifier(start, released, weights, weights_at_start,
                                                                  tmp_path):
    from microdense_cli import main
    _, run, _ = released
    tree = make_image_tree(tmp_path / "three", classes=3, seed=1)
    out = tmp_path / "tuned"
    flags = ["--init-from", str(run)] if start == "init-from" else ["--pretrained"]
    assert main([*TRAIN, "--epochs", "1", "--data-dir", str(tree), "--out", str(out), "--num-classes", "3",
                 *flags]) == 0
    source = load_file(str(run / "model.safetensors"))
    assert weights_at_start.keys() == source.keys()
    for key, value in source.items():
        if key.startswith("head.fc."):
            assert weights_at_start[key].shape[0] == 3 != value.shape[0]
        else:
            assert torch.equal(weights_at_start[key], value), key
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["init_from" if start == "init-from" else "pretrained"] in (str(run), True)
    started = saved["provenance"]["started_from"]
    assert started["source"] == (str(run) if start == "init-from" else NAME)
    assert started["model"] == "microdensenet_cifar_tiny" and started["commit"]
    tuned = json.loads((out / "config.json").read_text())["microdense"]
    assert tuned["classes"] == ["class0", "class1", "class2"] and tuned["provenance"]["started_from"] == started
    # the source's normalisation, not the new images' own statistics
    own = ImagePipeline(DataCfg(name="imagefolder", root=str(tree), val_split=0.25), None, seed=0)
    own.load()
    source_info = json.loads((run / "config.json").read_text())["microdense"]
    assert (tuned["mean"], tuned["std"]) == (source_info["mean"], source_info["std"]) != (list(own.mean), list(own.std))


def test_quiet_fine_tuning_from_a_shipped_release_prints_the_closing_line_only(tmp_path):
    if not (_pretrained.weights_dir() / "resnet20_cifar.cifar10.safetensors").is_file():
        pytest.skip("the package ships no resnet20_cifar release")
    tree = make_image_tree(tmp_path / "three", classes=3, seed=1)
    proc = subprocess.run([sys.executable, "-m", "microdense_cli", *TRAIN, "--model", "resnet20_cifar", "--pretrained",
                           "--num-classes", "3", "--max-steps", "1", "--data-dir", str(tree), "--out",
                           str(tmp_path / "tuned")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("done: resnet20_cifar") and len(proc.stdout.strip().splitlines()) == 1
    assert "Loaded" not in proc.stderr and "Missing keys" not in proc.stderr, proc.stderr


def test_init_from_names_the_tensors_that_do_not_fit(released, weights):
    _, run, _ = released
    with pytest.raises(ValueError) as e:
        init_from(timm.create_model("resnet20_cifar"), str(run))
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"ModelCfg.init_from: the weights of {run} (microdensenet_cifar_tiny)")
    assert "do not fit resnet20_cifar: stages.0.0.bn1.bias (missing); " in text and " more; start from a run" in text
    tiny = timm.create_model("microdensenet_cifar_tiny", num_classes=4, pyramid="constant")
    with pytest.raises(ValueError, match=r"stages\.0\.0\.fuse\.0\.bias \(112,\) vs \(64,\)"):
        init_from(tiny, str(run))
    model = timm.create_model("microdensenet_cifar_tiny", num_classes=4)
    assert init_from(model, NAME)["source"] == NAME  # a released name works as well
    assert torch.equal(model.get_classifier().weight, load_file(str(run / "model.safetensors"))["head.fc.weight"])
