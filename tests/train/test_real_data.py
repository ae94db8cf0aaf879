"""Integration on the real CIFAR-10 images beside the project; skipped (visibly) when they are absent."""
import json

import pytest

from microdense_cli import main


@pytest.mark.data
@pytest.mark.slow
def test_train_and_eval_on_shared_cifar10_images(shared_cifar, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "imagefolder", "--data-dir", str(shared_cifar), "--val-split", "0.1",
                 "--max-steps", "3", "--batch-size", "32", "--out", str(out), "--accelerator", "cpu",
                 "--devices", "1", "--set", "run.checkpoint_every=3"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--data", "imagefolder", "--data-dir", str(shared_cifar),
                 "--val-split", "0.1", "--json", "--accelerator", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 5000  # 10% of every class of the 50,000 training images
    assert result["top1"] * 5000 == pytest.approx(round(result["top1"] * 5000), abs=1e-3)  # a count of images
    assert result["top5"] >= result["top1"]
    # the Lightning checkpoint and the export hold the same network: the same figures on the same 5,000 images
    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--data", "imagefolder",
                 "--data-dir", str(shared_cifar), "--val-split", "0.1", "--json", "--accelerator", "cpu"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["top1"] == result["top1"] and again["loss"] == pytest.approx(result["loss"], rel=1e-5)


def _shipped_cifar10_releases():
    from microdense.models._pretrained import read_release, weights_dir
    found = [read_release(p) for p in sorted(weights_dir().glob("*.cifar10.safetensors"))]
    return [m for m in found if m["record"]["data"].get("name") == "imagefolder"]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("meta", _shipped_cifar10_releases(), ids=lambda m: m["architecture"])
def test_a_shipped_release_scores_what_its_card_says_on_its_held_out_images(meta, shared_cifar, capsys):
    record = meta["record"]
    data = record["data"]
    assert data["images"] == 50000 and set(data["per_class"]) == set(meta["classes"])  # trained on these images
    flip = ["--flip"] if record.get("val_flip") else []
    assert main(["eval", "--checkpoint", f"{meta['architecture']}.{meta['tag']}", "--data", "imagefolder",
                 "--data-dir", str(shared_cifar), "--val-split", str(data["val_split"]), "--seed", str(record["seed"]),
                 "--json", "--accelerator", "cpu", *flip]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert round(result["top1"] * result["images"]) == round(record["val_top1"] * result["images"])
    assert round(result["top5"] * result["images"]) == round(record["val_top5"] * result["images"])
