"""`microdense export` and `microdense predict` end to end, and the ONNX export of every registered model."""
import csv
import json
import subprocess

import pytest
import timm
import torch

import microdense  # noqa: F401  (registers the models)
from microdense_cli import main
from microdense.deploy.export import export_model_file
from microdense.models import list_models
from microdense.saved.trained_model import LoadedModel, RunInfo


def assert_one_line_error(proc: subprocess.CompletedProcess, text: str, code: int) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert text in lines[0], lines[0]


def _calibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """BN statistics measured on inputs, as training leaves them: activations (and logits) in a trained net's range,
    where an untrained deep net's logits grow into the thousands."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


@pytest.mark.filterwarnings("error::DeprecationWarning")  # the chosen exporter's deprecation notices stay ours to hide
@pytest.mark.parametrize("name", list_models())
def test_every_model_exports_to_onnx_at_its_own_input_size(name, tmp_path):
    from microdense.deploy.export import check_inputs
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    loaded = LoadedModel(model, RunInfo(name, {}, [f"c{i}" for i in range(cfg["num_classes"])], cfg["mean"],
                                        cfg["std"], cfg["input_size"], cfg["crop_pct"]))
    _calibrate_batchnorm(model, check_inputs(loaded, 4, seed=1))
    # NOTE: an untrained 20-cell DARTS net differs from its own float64 computation by ~1e-4 in fp32; an export is
    # held to 1e-4 or to 4x the model's own fp32 rounding on these inputs, whichever is larger.
    from conftest import fp32_noise
    tolerance = max(1e-4, 4 * fp32_noise(model, check_inputs(loaded, 1)))
    result = export_model_file(loaded, tmp_path / "m.onnx", "onnx", dynamic_batch=True, check_images=1,
                               tolerance=tolerance)
    assert result.max_abs_diff <= tolerance and result.path.is_file()
    import onnxruntime as ort
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == list(cfg["input_size"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["microdense"])
    assert meta["architecture"] == name and len(meta["label_names"]) == cfg["num_classes"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run on a 4-class image tree, with both exports made through the command line."""
    from conftest import make_image_tree
    base = tmp_path_factory.mktemp("deploy")
    tree = make_image_tree(base / "images")
    out = base / "run"
    assert main(["train", "--data", "imagefolder", "--data-dir", str(tree), "--val-split", "0.25", "--batch-size",
                 "8", "--epochs", "1", "--accelerator", "cpu", "--devices", "1", "--out", str(out), "--quiet"]) == 0
    assert main(["export", "--checkpoint", str(out), "--format", "onnx"]) == 0
    assert main(["export", "--checkpoint", str(out), "--format", "torchscript"]) == 0
    return tree, out


def test_export_prints_the_check_and_keeps_class_names(run, capsys, tmp_path):
    _, out = run
    assert main(["export", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--format", "onnx",
                 "--out", str(tmp_path / "static.onnx"), "--opset", "17"]) == 0
    text = capsys.readouterr().out
    assert "folded 12 BN layers" in text and "max |logit difference|" in text and "same top-1" in text
    assert json.loads((out / "config.json").read_text())["label_names"] == ["class0", "class1", "class2", "class3"]
    assert not list(out.glob(".*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_every_model_file_predicts_the_same(run, capsys):
    tree, out = run
    results = {}
    for source in (out, out / "model.safetensors", out / "checkpoints" / "last.ckpt", out / "model.onnx",
                   out / "model.pt"):
        assert main(["predict", "--checkpoint", str(source), str(tree), "--topk", "2", "--json"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        results[source.name] = [json.loads(line) for line in lines]
    reference = results["run"]
    assert len(reference) == 48  # the folder is walked recursively: 4 classes x 12 images
    assert {p["top"][0]["label"] for p in reference} <= {"class0", "class1", "class2", "class3"}
    for name, preds in results.items():
        assert [p["path"] for p in preds] == [p["path"] for p in reference], name
        for got, want in zip(preds, reference):
            assert [t["label"] for t in got["top"]] == [t["label"] for t in want["top"]], name
            assert got["top"][0]["probability"] == pytest.approx(want["top"][0]["probability"], abs=1e-4), name


def test_predict_text_and_csv(run, tmp_path, capsys):
    tree, out = run
    image = tree / "class2" / "0.png"
    assert main(["predict", "--checkpoint", str(out / "model.onnx"), str(image), "--topk", "4"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and line.count("%") == 4
    target = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(out), str(tree / "class0"), "--csv", str(target), "--topk", "3"]) == 0
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == 12 * 3 and rows[0].keys() == {"path", "rank", "label", "class_index", "probability"}
    assert [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    assert sum(float(r["probability"]) for r in rows[:3]) <= 1.0 + 1e-6


def test_unreadable_files_in_a_folder_are_skipped(run, tmp_path, capsys):
    tree, out = run
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes((tree / "class1" / "0.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not an image at all")
    assert main(["predict", "--checkpoint", str(out), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(x)["path"] for x in captured.out.strip().splitlines()] == [str(folder / "a.png")]
    assert "skipped 1 unreadable file(s)" in captured.err


def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, cli_here):
    tree, out = run
    text_file = tmp_path / "notes.png"
    text_file.write_text("hello")
    assert_one_line_error(cli_here("predict", "--checkpoint", str(out), str(text_file)),
                          "is not an image that can be read", 2)
    assert_one_line_error(cli_here("predict", "--checkpoint", str(out), str(tree), "--topk", "5"),
                          "topk 5 must lie in 1..4", 2)
    assert_one_line_error(cli_here("predict", "--checkpoint", str(out), str(tmp_path / "missing.jpg")),
                          "missing.jpg does not exist", 1)  # a path to fix: an OSError's status
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_line_error(cli_here("export", "--checkpoint", str(out), "--format", "onnx",
                                  "--out", str(blocker / "m.onnx")), "is not a writable folder", 2)
    assert_one_line_error(cli_here("export", "--checkpoint", str(out), "--format", "torchscript", "--opset", "17"),
                          "--opset and --dynamic-batch are ONNX options", 2)
    foreign = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, foreign)
    assert_one_line_error(cli_here("export", "--checkpoint", str(foreign), "--format", "onnx"),
                          "is not a microdense training checkpoint", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "notes.png", "other.ckpt"]
