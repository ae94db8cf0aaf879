"""The command line as a user meets it: output, JSON shape, one-line errors with exit codes."""
import json
import subprocess
import sys

import pytest

from microdense.errors import ConfigError, TrainingDiverged
from microdense.train.config import RECIPES
from microdense_cli import main


def test_models_lists_one_name_per_line(capsys):
    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert {"microdensenet_cifar_base", "resnet110_cifar", "darts_v2_cifar"} <= set(names)
    assert "resnet50" not in names  # timm's own models are not ours to list
    assert main(["models", "*imagenet*"]) == 0
    assert capsys.readouterr().out.split() == ["microdensenet_imagenet_base", "microdensenet_imagenet_small"]
    assert main(["models", "tiny"]) == 0  # a bare word: anywhere in the name
    assert capsys.readouterr().out.split() == ["microdensenet_cifar_tiny"]


def test_info_table(capsys):
    assert main(["info", "microdensenet_cifar_tiny"]) == 0
    out = capsys.readouterr().out
    assert "260.506K parameters" in out and "43.452M MACs" in out and "3x32x32" in out and "10 classes" in out
    assert out.count("\n") >= 6  # heading, header, three stages, total


def test_info_json(capsys):
    assert main(["info", "microdensenet_cifar_tiny", "--num-classes", "100", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "microdensenet_cifar_tiny"
    assert info["num_classes"] == 100 and info["input_size"] == [3, 32, 32]
    assert info["params"] == 260_506 + 90 * 193  # 90 more classes, each 192 weights + a bias
    assert info["macs"] > 0 and len(info["stages"]) == 3
    assert {"width", "blocks", "params", "macs"} <= set(info["stages"][0])


def test_unknown_model_one_line_with_suggestions_exit_2():
    proc = subprocess.run([sys.executable, "-m", "microdense_cli", "info", "microdensenet_cifar_bas"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "unknown model 'microdensenet_cifar_bas'" in lines[0] and "microdensenet_cifar_base" in lines[0]


@pytest.mark.parametrize("bug", [TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'"),
                                 ValueError("not enough values to unpack (expected 2, got 1)")])
def test_a_bug_inside_the_package_keeps_its_traceback(monkeypatch, bug):
    """Only the package's own error types are worded as one line; the same builtins raised by our code are bugs."""
    import microdense.models.size as size

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(size, "measure_size", broken)
    with pytest.raises(type(bug), match=str(bug)[:20]):
        main(["info", "microdensenet_cifar_tiny"])


@pytest.mark.parametrize("error, code", [
    (ConfigError("OptimCfg.lr: -1 is out of range"), 2),
    (TrainingDiverged("training diverged at step 3", step=3, loss=float("nan"), lr=1.0), 3)])
def test_a_user_error_is_one_line_with_its_own_exit_code(monkeypatch, capsys, error, code):
    import argparse

    from microdense import cli

    def command(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "fake", command)
    assert cli.run_command(argparse.Namespace(command="fake")) == code
    assert capsys.readouterr().err == f"microdense: error: {error}\n"


# darts sets an auxiliary head, which only a DARTS model (not the default) takes
@pytest.mark.parametrize("recipe", [None, *(r for r in RECIPES if r != "darts")])
def test_train_with_no_flags_runs_train_config_defaults(monkeypatch, recipe):
    """`TrainConfig()` in Python is what `microdense train` runs with no flags, and `TrainConfig(recipe=R)` what
    `microdense train --recipe R` runs: one set of defaults (issue 42)."""
    import functools
    import types

    import microdense.train.run as run
    from microdense.train.config import FIELDS, TrainConfig

    def value(cfg, name):  # a field by its dotted name, e.g. optim.lr
        return functools.reduce(getattr, name.split("."), cfg)

    ran = []
    monkeypatch.setattr(run, "train", lambda cfg, **kwargs: ran.append(cfg) or types.SimpleNamespace(primary=False))
    assert main(["train", *(["--recipe", recipe] if recipe else [])]) == 0
    default = TrainConfig(recipe=recipe) if recipe else TrainConfig()
    for name in FIELDS:
        assert value(ran[0], name) == value(default, name), name
    assert ran[0] == default


def test_refused_config_is_one_line(capsys):
    from microdense.models import create_model
    with pytest.raises(ValueError, match="MicroDenseBlockCfg.base_width: 12 is not divisible by group_width 8"):
        create_model("microdensenet_cifar_tiny", base_width=12)


def test_help_and_models_start_without_torch():
    """The front door answers --help and models without importing torch, timm or Lightning (start-up time)."""
    from conftest import modules_loaded_by
    code = ("import contextlib, io, microdense_cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    microdense_cli.main(['models'])\n"
            "    with contextlib.suppress(SystemExit): microdense_cli.main(['train', '--help'])\n")
    assert modules_loaded_by(code, ("torch", "timm", "lightning", "microdense")) == []


def test_front_door_model_list_is_the_registry():
    import microdense_cli
    from microdense.models import list_models
    assert list(microdense_cli.MODEL_NAMES) == list_models()


def test_argparse_errors_are_one_line():
    proc = subprocess.run([sys.executable, "-m", "microdense_cli", "info"], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the following arguments are required: name" in lines[0]
    assert "see `microdense info --help`" in lines[0]


def test_front_door_choices_match_the_package():
    import microdense_cli
    from microdense.data.config import DATA_NAMES
    from microdense.train.config import RECIPES
    assert microdense_cli.RECIPES == RECIPES and microdense_cli.DATA_KINDS == DATA_NAMES


def test_every_train_flag_sets_a_configuration_field():
    """A flag whose field is misspelt would be dropped by `microdense train` without a word; this catches it."""
    from microdense.train.config import FIELDS
    from microdense_cli import TRAIN_FLAGS

    assert [field for _, field, _ in TRAIN_FLAGS if field not in FIELDS and not field.startswith("model.kwargs.")] == []
