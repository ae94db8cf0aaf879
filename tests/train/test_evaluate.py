"""`microdense eval` scores what it says and says what it scored: the images a run held out, a new folder whole."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import make_image_tree
from microdense.data.sources import DataSource, TensorImages
from microdense.errors import DataError
from microdense.saved.run_folder import read_metrics
from microdense.train.evaluate import _as_model_labels
from microdense_cli import main

# 4 classes x 20 images; training holds out 10% of each class (no --val-split given): 8 images
TRAIN = ["train", "--data", "imagefolder", "--batch-size", "8", "--max-steps", "2", "--accelerator", "cpu",
         "--devices", "1", "--quiet"]
EVAL = ["eval", "--accelerator", "cpu", "--json"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(image tree, run folder trained on it)."""
    base = tmp_path_factory.mktemp("evaluated")
    tree = make_image_tree(base / "images", per_class=20)
    out = base / "run"
    assert main([*TRAIN, "--data-dir", str(tree), "--out", str(out)]) == 0
    return tree, out


def _scores(cli_here, *args: str) -> dict:
    proc = cli_here(*EVAL, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_data_a_run_trained_on_is_scored_on_the_images_it_held_out(run, cli_here):
    tree, out = run
    final = read_metrics(out / "metrics.csv")[-1]
    for data in (["--data", "imagefolder", "--data-dir", str(tree)], []):  # named, or the run's own by default
        result = _scores(cli_here, "--checkpoint", str(out), *data)
        assert result["images"] == 8
        assert result["scored"] == f"8 held-out images of {tree}, as the run held them out (val_split 0.1, seed 0)"
        assert result["top1"] == pytest.approx(float(final["val_top1"]), abs=1e-6)
    every = _scores(cli_here, "--checkpoint", str(out), "--data", "imagefolder", "--data-dir", str(tree),
                    "--all-images")
    assert every["images"] == 80 and every["scored"] == f"all 80 images of {tree}"


def test_a_run_recorded_before_its_split_sat_beside_its_fingerprint_is_held_out_by_its_config(run, tmp_path, cli_here):
    tree, out = run
    older = tmp_path / "older"
    shutil.copytree(out, older)
    config = json.loads((older / "config.json").read_text())
    for key in ("root", "val_split", "seed"):
        del config["microdense"]["provenance"]["data"][key]
    (older / "config.json").write_text(json.dumps(config))
    result = _scores(cli_here, "--checkpoint", str(older))
    assert result["images"] == 8 and result["scored"].startswith(f"8 held-out images of {tree}, as the run held")


def test_a_folder_the_run_never_saw_is_scored_whole(run, tmp_path, cli_here):
    _, out = run
    other = make_image_tree(tmp_path / "other", per_class=5, seed=1)
    proc = cli_here("eval", "--checkpoint", str(out), "--data", "imagefolder", "--data-dir", str(other),
                    "--accelerator", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"on all 20 images of {other}")


def test_eval_json_owns_stdout(run):
    """What a user pipes into `python -m json.tool`: stdout is the JSON object alone, the progress bar on stderr."""
    tree, out = run
    proc = subprocess.run([sys.executable, "-m", "microdense_cli", *EVAL, "--checkpoint", str(out), "--data",
                           "imagefolder", "--data-dir", str(tree), "--per-class", "--plot", str(out.parent / "c.png")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["images"] == 8 and set(result["per_class"]) == {f"class{c}" for c in range(4)}
    assert "Validation" in proc.stderr and "confusion matrix" in proc.stderr


def test_other_class_names_are_refused_in_one_line(run, tmp_path, cli_here):
    tree, out = run
    renamed = tmp_path / "renamed"
    shutil.copytree(tree, renamed)
    for c in range(4):
        (renamed / f"class{c}").rename(renamed / f"kind{c}")
    more = make_image_tree(tmp_path / "more", classes=6, per_class=2)
    for folder, text in ((renamed, "it lacks class0, class1, class2, class3; it has kind0, kind1, kind2, kind3, "
                                     "which the model does not"),
                         (more, "it has class4, class5, which the model does not")):
        proc = cli_here("eval", "--checkpoint", str(out), "--data", "imagefolder", "--data-dir", str(folder))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and proc.stdout == "", proc.stderr
        assert f"{folder} does not hold the model's classes ({text})" in lines[0]
        assert "evaluate on data whose classes are the model's 4: class0, class1, class2, class3" in lines[0]


def test_the_same_class_names_in_another_order_are_mapped_to_the_models():
    split = TensorImages(torch.zeros(3, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2]))
    source = DataSource(split, None, ["cat", "dog", "emu"])
    mapped = _as_model_labels(source, ["emu", "cat", "dog"], "DIR")
    assert mapped.classes == ["emu", "cat", "dog"] and mapped.train.labels.tolist() == [1, 2, 0]
    with pytest.raises(DataError, match="it lacks ant; it has emu, which the model does not"):
        _as_model_labels(source, ["ant", "cat", "dog"], "DIR")


def test_a_release_without_data_is_refused_naming_data(cli_here):
    proc = cli_here("eval", "--checkpoint", "microdensenet_cifar_tiny.cifar10")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "released weights, whose training images are not here" in lines[0] and "--data" in lines[0]
