"""Every wrong value is refused before work starts: one line, a non-zero exit, no traceback, nothing on disk.

The wrong values are generated from `TrainConfig`'s own field types and rules, so a field added later is covered
without touching this file.
"""
import dataclasses
import subprocess
import sys

import pytest
import yaml

from microdense_cli import main
from microdense.fields import bad_values, check_fields, setting
from microdense.train.config import FIELDS, SECTION_TYPES, TrainConfig

BAD = sorted(bad_values(TrainConfig), key=lambda pair: pair[0])


def test_every_field_gets_wrong_values():
    covered = {name for name, _ in BAD}
    assert covered == {*FIELDS, *SECTION_TYPES}  # every field by its dotted name, and each section itself
    assert len(BAD) > 2 * len(covered)  # a wrong type for each, plus the bounds and choices


@pytest.mark.parametrize("field, value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_wrong_value_is_one_line_and_creates_nothing(field, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # NOTE: no other flags: a flag would win over --set for its own field.
    rc = main(["train", "--set", f"{field}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microdense: error: "), err
    assert field.split(".")[-1] in lines[0], lines[0]  # <Section>Cfg.<field>
    assert list(tmp_path.iterdir()) == [], "nothing may be created on disk"


@pytest.mark.parametrize("args, text", [
    (["--lr", "-0.1"], "OptimCfg.lr: -0.1 is out of range; it must be > 0"),
    (["--precision", "fp33"], "RunCfg.precision: unknown value 'fp33'"),
    (["--precision", "16-mixed", "--accelerator", "cpu"], "'16-mixed' does not run on a CPU"),
    (["--set", "run.epochs=abc"], "RunCfg.epochs: needs a whole number, got 'abc'"),
    (["--epochs", "0"], "RunCfg.epochs: 0 is out of range; it must be >= 1"),
    (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    (["--set", "optim.momentum=0"], "Nesterov momentum needs momentum > 0"),
    (["--devices", "0,1", "--accelerator", "cpu"], "RunCfg.devices: '0,1' is not allowed here"),
    (["--set", "data.randaugment=m9"], "DataCfg.randaugment: 'm9' is not a timm RandAugment spec"),
    (["--batch-size", "0"], "DataCfg.batch_size: 0 is out of range; it must be >= 1"),
    (["--set", "cutout=16"], "names unknown field 'cutout'; it moved to data.cutout"),
    (["--set", "optim.lrr=0.1"], "names unknown field 'optim.lrr'; did you mean optim.lr"),
    (["--set", "run.epochs=[1"], "the value is not valid YAML"),
])
def test_wrong_flags_are_one_line(args, text, tmp_path, monkeypatch, cli_here):
    monkeypatch.chdir(tmp_path)
    proc = cli_here("train", "--out", "run", *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert text in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, text", [
    (["--lr", "-0.1"], "OptimCfg.lr: -0.1 is out of range; it must be > 0"),
    (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
])
def test_wrong_flags_through_the_real_command(args, text, tmp_path):
    """As a user meets it: a process, its stderr, its exit status, its working folder (one refusal of ours, one of
    argparse's; the others above go through the same `main`)."""
    proc = subprocess.run([sys.executable, "-m", "microdense_cli", "train", "--out", "run", *args],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert text in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_single_class_folder_is_refused_before_the_run_folder(tmp_path, capsys):
    from conftest import make_image_tree
    tree = make_image_tree(tmp_path / "images", classes=1)
    rc = main(["train", "--data", "imagefolder", "--data-dir", str(tree), "--out", str(tmp_path / "run"),
               "--accelerator", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "has one class sub-folder (class0); a classifier needs at least 2" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, text", [
    (["info", "microdensenet_cifar_tiny", "--num-classes", "0"], "argument --num-classes: '0' is out of range"),
    (["eval", "--checkpoint", "x", "--batch-size", "0"], "argument --batch-size: '0' is out of range"),
    (["eval", "--checkpoint", "x", "--val-split", "1.5"], "argument --val-split: '1.5' is out of range"),
    (["bench", "--models", "resnet18_cifar", "--steps", "0"], "argument --steps: '0' is out of range"),
    (["bench", "--models", "resnet18_cifar:channels_last"], "bad model option 'channels_last'"),
    (["bench", "--models", "resnet18_cifar:amp=fp8"], "amp='fp8'; choose one of bf16, fp16"),
    (["bench", "--models", "resnet18_cifar:compile=maybe"], "compile='maybe' must be true or false"),
    (["bench", "--models", "microdensenet_cifar_tiny:base_width=12"], "not divisible by group_width 8"),
])
def test_other_commands_check_their_options(argv, text, tmp_path, monkeypatch, cli_here):
    monkeypatch.chdir(tmp_path)
    proc = cli_here(*argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert text in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_check_fields_names_field_value_and_rule():
    @dataclasses.dataclass
    class Cfg:
        steps: int = setting(1, ge=1, also=(-1,))
        rate: float = setting(0.5, gt=0, lt=1)

    check_fields(Cfg(steps=-1))  # an allowed special value
    with pytest.raises(ValueError, match=r"Cfg.steps: 0 is out of range; it must be >= 1 \(or -1\)"):
        check_fields(Cfg(steps=0))
    with pytest.raises(ValueError, match=r"Cfg.rate: 1.0 is out of range; it must be > 0 and < 1"):
        check_fields(Cfg(rate=1.0))
    with pytest.raises(TypeError, match="Cfg.steps: needs a whole number, got True"):
        check_fields(Cfg(steps=True))
    with pytest.raises(TypeError, match="Cfg.rate: needs a number, got nan"):
        check_fields(Cfg(rate=float("nan")))
