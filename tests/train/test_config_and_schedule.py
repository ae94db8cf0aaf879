"""Configuration precedence and the learning-rate schedules."""
import pytest

from microdense.train.config import TrainConfig, resolve_config, save_config
from microdense.train.system import lr_factor


def test_precedence_defaults_recipe_file_flags(tmp_path):
    cfg = resolve_config({})
    assert (cfg.model, cfg.data.name, cfg.recipe) == ("microdensenet_cifar_tiny", "synthetic", "fast")
    assert cfg.epochs == 3 and cfg.data.batch_size == 256 and cfg.schedule == "onecycle"  # demo epochs, fast recipe
    paper = resolve_config({"recipe": "paper", "data.name": "cifar10"})
    assert (paper.epochs, paper.data.batch_size, paper.lr, paper.schedule) == (300, 64, 0.1, "step")
    # the data section merges key by key: a file's cutout joins the recipe's batch size, a flag wins over both
    f = tmp_path / "d.yaml"
    f.write_text("recipe: paper\ndata:\n  cutout: 8\n  batch_size: 32\n")
    merged = resolve_config({"data.batch_size": 16}, str(f))
    assert (merged.data.cutout, merged.data.batch_size, merged.data.crop_padding) == (8, 16, 4)
    f = tmp_path / "c.yaml"
    f.write_text("recipe: paper\nlr: 0.05\nepochs: 7\n")
    cfg = resolve_config({"lr": 0.02}, str(f))
    assert (cfg.recipe, cfg.epochs, cfg.lr, cfg.weight_decay) == ("paper", 7, 0.02, 1e-4)
    again = resolve_config({}, _write(tmp_path / "saved.yaml", save_config(cfg)))
    assert again == cfg


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("content, message", [
    ("lr: [", "is not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
    ("learning_rate: 0.1\n", "names unknown field 'learning_rate'"),
    ("batch_size: 64\n", "names unknown field 'batch_size'; fields are"),
    ("data:\n  batchsize: 64\n", "names unknown data field(s) ['batchsize']"),
    ("data: cifar10\n", "TrainConfig.data: needs a mapping, got 'cifar10'"),
    ("schedule: linear\n", "TrainConfig.schedule: unknown value 'linear'"),
])
def test_bad_config_files(tmp_path, content, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        resolve_config({}, _write(tmp_path / "c.yaml", content))


def test_step_schedule_divides_at_milestones():
    cfg = TrainConfig(schedule="step", epochs=10, milestones=[0.5, 0.75])
    f = [lr_factor(cfg, s, 100, 0, 10) for s in (0, 49, 50, 74, 75, 99)]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_and_onecycle_shapes():
    cos = TrainConfig(schedule="cosine")
    assert lr_factor(cos, 0, 100, 10, 10) == pytest.approx(0.1)
    assert lr_factor(cos, 10, 100, 10, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 100, 100, 10, 10) == pytest.approx(0.0, abs=1e-9)
    one = TrainConfig(schedule="onecycle")
    assert lr_factor(one, 0, 100, 10, 10) == pytest.approx(1 / 25)
    assert lr_factor(one, 10, 100, 10, 10) == pytest.approx(1.0)
    assert lr_factor(one, 100, 100, 10, 10) == pytest.approx(1 / 25_000)
    # short runs (warm-up longer than the run) stay finite and bounded
    assert all(0 < lr_factor(one, s, 3, 1, 1405) <= 1 for s in range(3))
