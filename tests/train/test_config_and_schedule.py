"""Configuration sections, precedence, the flat layout of earlier runs, and the learning-rate schedules."""
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from microdense.train.config import OptimCfg, RunCfg, TrainConfig, resolve_config, save_config
from microdense.train.progress import RunProgress
from microdense.train.system import lr_factor, warmup_fraction

COMMITTED_RUNS = sorted((Path(__file__).resolve().parents[2] / "docs" / "results").glob("**/runs/*/config.yaml"))


def test_precedence_defaults_recipe_file_flags(tmp_path):
    cfg = resolve_config({})
    assert (cfg.model.name, cfg.data.name, cfg.recipe) == ("microdensenet_cifar_tiny", "synthetic", "fast")
    assert cfg.run.epochs == 3 and cfg.data.batch_size == 256 and cfg.optim.schedule == "onecycle"  # demo, fast
    paper = resolve_config({"recipe": "paper", "data.name": "cifar10"})
    assert (paper.run.epochs, paper.data.batch_size, paper.optim.lr, paper.optim.schedule) == (300, 64, 0.1, "step")
    # a section merges field by field: a file's cutout joins the recipe's batch size, a flag wins over both
    f = tmp_path / "d.yaml"
    f.write_text("recipe: paper\ndata:\n  cutout: 8\n  batch_size: 32\n")
    merged = resolve_config({"data.batch_size": 16}, str(f))
    assert (merged.data.cutout, merged.data.batch_size, merged.data.crop_padding) == (8, 16, 4)
    f = tmp_path / "c.yaml"
    f.write_text("recipe: paper\noptim:\n  lr: 0.05\nrun:\n  epochs: 7\n")
    cfg = resolve_config({"optim.lr": 0.02}, str(f))
    assert (cfg.recipe, cfg.run.epochs, cfg.optim.lr, cfg.optim.weight_decay) == ("paper", 7, 0.02, 1e-4)
    again = resolve_config({}, _write(tmp_path / "saved.yaml", save_config(cfg, provenance={"code": {}})))
    assert again == cfg


def test_model_kwargs_merge_key_by_key_and_a_flag_sets_one_of_them():
    cfg = resolve_config({"recipe": "darts", "model.name": "darts_cifar", "model.kwargs.genotype": "DARTS_V1",
                          "model.kwargs": {"layers": 8}})
    assert cfg.model.kwargs == {"auxiliary": True, "layers": 8, "genotype": "DARTS_V1"}  # recipe, file, flag
    assert cfg.model.drop_path_rate == 0.2


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("content, message", [
    ("optim: {lr: [", "is not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
    ("learning_rate: 0.1\n", "names unknown field 'learning_rate'"),
    ("batch_size: 64\n", "names unknown field 'batch_size'; it moved to data.batch_size"),
    ("data:\n  batchsize: 64\n", "names unknown field 'data.batchsize'; did you mean data.batch_size"),
    ("data: cifar10\n", "TrainConfig.data: needs a mapping, got 'cifar10'"),
    ("optim: {schedule: linear}\n", "OptimCfg.schedule: unknown value 'linear'"),
    ("model: {kwargs: {base_width: 12}}\n", "MicroDenseBlockCfg.base_width: 12 is not divisible by group_width 8"),
])
def test_bad_config_files(tmp_path, content, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        resolve_config({}, _write(tmp_path / "c.yaml", content))


def test_a_moved_field_on_the_command_line_says_where_it_went():
    for name, where in (("workers", "data.workers"), ("lr", "optim.lr"), ("model_kwargs", "model.kwargs"),
                        ("epochs", "run.epochs")):
        with pytest.raises(ValueError, match=f"unknown field '{name}'; it moved to {where}"):
            resolve_config({name: 1})


@pytest.mark.parametrize("path", COMMITTED_RUNS, ids=lambda p: f"{p.parts[-4]}/{p.parts[-2]}")
def test_every_committed_run_config_still_loads_as_it_ran(path):
    """Run folders saved in the flat layout (the older studies') or in sections load with each value at its new
    place, so they resume and their studies recognise them; fields added since come from the run's recipe, and the
    learning rate a one-device run trains at is the one it ran at."""
    import yaml

    from microdense.train.config import peak_lr
    added_since = {"lr_base_size", "lr_scale"}  # the learning rate's reference batch (2026-12-03)
    run_added_since = {"restart"}  # start a run folder anew (2026-12-07): saved as false since
    saved = yaml.safe_load(path.read_text())
    cfg = resolve_config({}, str(path))
    if "lr_base_size" not in saved.get("optim", saved):  # saved before rates followed the batch: used as given
        assert cfg.optim.lr_base_size is None
    optim = {k: v for k, v in dataclasses.asdict(cfg.optim).items() if k not in added_since}
    if "optim" in saved:  # saved in the sections' layout already
        assert peak_lr(cfg.optim, cfg.data.batch_size) == saved["optim"]["lr"]
        resaved = yaml.safe_load(save_config(cfg))
        assert {k: v for k, v in resaved["optim"].items() if k not in added_since} == optim
        resaved["run"] = {k: v for k, v in resaved["run"].items() if k in saved["run"] or k not in run_added_since}
        assert {k: v for k, v in resaved.items() if k != "optim"} == {
            k: v for k, v in saved.items() if k not in ("provenance", "optim")}
        assert {k: v for k, v in saved["optim"].items() if k not in added_since} == optim
        return
    assert peak_lr(cfg.optim, cfg.data.batch_size) == saved["lr"]
    assert (cfg.model.name, cfg.model.kwargs, cfg.data) == (saved["model"], saved["model_kwargs"],
                                                             type(cfg.data)(**saved["data"]))
    expected = {k: saved.get(k, v) for k, v in dataclasses.asdict(OptimCfg()).items() if k not in added_since}
    assert optim == expected  # a field added since (and not from the recipe): its default
    assert dataclasses.asdict(cfg.run) == {k: saved.get(k, v) for k, v in dataclasses.asdict(RunCfg(epochs=1)).items()}
    # a drop rate of 0.0 was never passed to the model then: the model's own default ruled, as None says now
    assert (cfg.model.drop_rate, cfg.model.drop_path_rate) == (saved["drop_rate"] or None,
                                                               saved["drop_path_rate"] or None)


def test_a_field_a_saved_run_omits_keeps_the_value_it_ran_with(tmp_path):
    """A run saved before one of its fields existed reads that field from its recipe, else from the section's own
    default, as it ran then; never from TrainConfig()'s defaults, which are the default recipe's (issue 42)."""
    import yaml

    cfg = resolve_config({"recipe": "budget", "data.name": "cifar10", "run.epochs": 1})
    saved = yaml.safe_load(save_config(cfg, provenance={"code": {}}))
    del saved["optim"]["warmup_epochs"]  # budget leaves it to OptimCfg (0): its warm-up is a fraction of the run
    assert TrainConfig().optim.warmup_epochs != cfg.optim.warmup_epochs
    assert resolve_config({}, _write(tmp_path / "config.yaml", yaml.safe_dump(saved))) == cfg


def test_every_recipe_resolves_to_its_own_values():
    """Each packaged recipe's file, field by field, is what a run made from it gets."""
    from microdense.train.config import RECIPES, recipe_values
    for name in RECIPES:
        model = "darts_cifar" if name == "darts" else "microdensenet_cifar_tiny"
        cfg = resolve_config({"recipe": name, "model.name": model, "data.name": "cifar10", "run.epochs": 1})
        values = recipe_values(name)
        assert set(values) <= {"model", "data", "optim", "run"} and values["optim"]
        for section, fields in values.items():
            for field, value in fields.items():
                expected = {**value, **cfg.model.kwargs} if field == "kwargs" else value
                got = getattr(getattr(cfg, section), field)
                assert got == (1 if (section, field) == ("run", "epochs") else expected), (name, section, field)


def test_step_schedule_divides_at_milestones():
    optim = OptimCfg(schedule="step", milestones=[0.5, 0.75])
    progress = RunProgress(total_steps=100, budget_s=None)  # 10 epochs of 10 steps
    f = [lr_factor(optim, progress.at(s), 0) for s in (0, 49, 50, 74, 75, 99)]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_and_onecycle_shapes():
    cos = OptimCfg(schedule="cosine")
    assert lr_factor(cos, 0.0, 0.1) == 0.0  # linear warm-up from 0
    assert lr_factor(cos, 0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor(cos, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(cos, 0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor(cos, 1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    one = OptimCfg(schedule="onecycle")
    assert lr_factor(one, 0.0, 0.1) == pytest.approx(1 / 25)
    assert lr_factor(one, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(one, 1.0, 0.1) == pytest.approx(1 / 25_000)


def test_warmup_is_a_fraction_of_the_run():
    assert warmup_fraction(OptimCfg(warmup_fraction=0.2), 10, None) == 0.2
    assert warmup_fraction(OptimCfg(warmup_epochs=1), 10, 100) == pytest.approx(0.1)
    # a run cut short by max_steps keeps at most half of itself for warm-up
    assert warmup_fraction(OptimCfg(warmup_epochs=1), 1405, 3) == 0.5


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_is_the_later_of_steps_and_seconds():
    clock = FakeClock()
    progress = RunProgress(total_steps=101, budget_s=100.0, clock=clock)
    progress.start()
    assert progress.at(0) == 0.0
    clock.now = 1.0  # step 0 took 1 s: steps lead (1/100 of the steps, 1/100 of the time)
    progress.tick()
    assert progress.at(1) == pytest.approx(0.01) and not progress.done_after(0)
    clock.now = 31.0  # step 1 took 30 s: time leads
    progress.tick()
    assert progress.at(2) == pytest.approx(0.31)
    progress.pause()  # validation: not counted
    clock.now = 1000.0
    progress.start()
    clock.now = 1001.0
    progress.tick()
    assert progress.elapsed == pytest.approx(32.0)


def test_a_step_that_overruns_the_budget_unforeseen_is_followed_by_a_last_step_at_progress_one():
    clock = FakeClock()
    progress = RunProgress(total_steps=None, budget_s=10.0, clock=clock)
    progress.start()
    ran_at = []
    for step, seconds in enumerate((1.0, 1.0, 20.0)):  # the third step stalls far past the budget
        ran_at.append(progress.at(step))
        clock.now += seconds
        progress.tick()
        stopped = progress.done_after(step)
    assert not stopped and max(ran_at) < 1.0 and progress.at(3) == 1.0
    clock.now += 1.0
    progress.tick()
    assert progress.done_after(3)


def test_budget_makes_the_step_that_would_overrun_it_the_last_at_progress_one():
    clock = FakeClock()
    progress = RunProgress(total_steps=None, budget_s=10.0, clock=clock)
    progress.start()
    stopped_after = None
    for step in range(100):
        assert progress.at(step) <= 1.0
        if progress.at(step) == 1.0:
            assert progress.at(step - 1) < 1.0  # the final value is reached exactly once, at the last step
        clock.now += 3.0  # every step takes 3 s: steps 0-2 end at 9 s, step 3 would end at 12 s
        progress.tick()
        if progress.done_after(step):
            stopped_after = step
            break
    assert stopped_after == 3 and progress.at(3) == 1.0
    # the plan survives a checkpoint
    again = RunProgress(total_steps=None, budget_s=10.0)
    again.load_state_dict(progress.state_dict())
    assert again.elapsed == progress.elapsed == 12.0 and again.at(3) == 1.0


def test_step_limit_ends_at_progress_one():
    progress = RunProgress(total_steps=5, budget_s=None)
    assert [progress.at(s) for s in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    assert [progress.done_after(s) for s in range(5)] == [False] * 4 + [True]


@pytest.mark.parametrize("make, message", [
    (lambda: RunCfg(epochs=None, max_steps=-1), "nothing says when to stop"),
    (lambda: OptimCfg(warmup_epochs=1, warmup_fraction=0.1), "warmup_epochs is set too"),
    (lambda: TrainConfig(optim=OptimCfg(warmup_epochs=1), run=RunCfg(time_budget=5)), "set warmup_fraction instead"),
    (lambda: RunCfg(epochs=1, time_budget=0), "RunCfg.time_budget: 0 is out of range"),
    (lambda: dataclasses.replace(TrainConfig(), run=dataclasses.replace(TrainConfig().run, epochs=None)),
     "nothing says when to stop"),
])
def test_a_configuration_is_checked_where_it_is_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_budget_recipe_needs_only_a_budget():
    cfg = resolve_config({"recipe": "budget", "run.time_budget": 10, "data.name": "cifar10"})
    assert cfg.run.epochs is None and cfg.run.time_budget == 10 and cfg.optim.warmup_fraction > 0
    with pytest.raises(ValueError, match="nothing says when to stop"):
        resolve_config({"recipe": "budget", "data.name": "cifar10"})


@pytest.mark.parametrize("lookahead, expected_move", [(False, -0.6), (True, -0.4)])
def test_lookahead_pulls_the_weights_back_every_k_steps(lookahead, expected_move):
    """Four SGD steps of gradient 1 at lr 0.1, 0.1, 0.1, 0.3 (the schedule sets each step's lr through
    param_groups). timm's Lookahead (k=2, alpha=0.5) takes its first slow copy at step 2 (-0.2); at step 4 the
    weights go back halfway from where SGD went (-0.6) to that copy: -0.4."""
    import torch
    import torch.nn as nn

    from microdense.train.system import ClassificationSystem
    model = nn.Linear(3, 2)
    optim = OptimCfg(lookahead=lookahead, lookahead_k=2, lookahead_alpha=0.5, momentum=0.0, nesterov=False,
                     weight_decay=0.0)
    opt = ClassificationSystem(model, optim, num_classes=2).configure_optimizers()
    start = model.weight.detach().clone()
    for lr in (0.1, 0.1, 0.1, 0.3):
        for group in opt.param_groups:
            group["lr"] = lr
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
    assert torch.allclose(model.weight - start, torch.full_like(start, expected_move), atol=1e-6)


def test_compile_wraps_the_training_forward_and_leaves_checkpoints_alone():
    import torch.nn as nn

    from microdense.train.system import ClassificationSystem
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    plain = ClassificationSystem(model, OptimCfg(), num_classes=3, run=RunCfg(epochs=1))
    compiled = ClassificationSystem(model, OptimCfg(), num_classes=3, run=RunCfg(epochs=1, compile=True))
    assert getattr(compiled._train_forward, "_torchdynamo_orig_callable", None) == model.__call__
    assert plain._train_forward == model.__call__
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no second copy of the model under another name


@pytest.mark.parametrize("devices, expected", [(1, 0.1), (8, 0.8)])
def test_the_learning_rate_follows_the_global_batch(devices, expected):
    from microdense.train.config import peak_lr
    from microdense.train.system import ClassificationSystem
    cfg = resolve_config({"recipe": "imagenet"})
    assert (cfg.optim.lr, cfg.optim.lr_base_size, cfg.data.batch_size) == (0.1, 256, 256)
    assert peak_lr(cfg.optim, 256 * devices) == pytest.approx(expected)  # README's ImageNet command: 0.8 on 8
    system = ClassificationSystem(torch.nn.Linear(2, 2), cfg.optim, 2, run=cfg.run, global_batch=256 * devices)
    assert system.peak_lr == pytest.approx(expected)
    assert system.configure_optimizers().param_groups[0]["lr"] == pytest.approx(expected)


def test_every_recipe_keeps_its_rate_on_one_device_and_sqrt_scaling_is_there():
    from dataclasses import replace

    from microdense.train.config import RECIPES, peak_lr
    for name in RECIPES:
        cfg = resolve_config({"recipe": name, "model.name": "darts_cifar" if name == "darts" else "resnet20_cifar"})
        assert peak_lr(cfg.optim, cfg.data.batch_size) == cfg.optim.lr, name  # no committed one-device run changes
    optim = replace(resolve_config({"recipe": "budget"}).optim, lr_scale="sqrt")
    assert peak_lr(optim, 4 * 128) == pytest.approx(0.8)  # 0.4 x sqrt(4)
    assert peak_lr(replace(optim, lr_base_size=None), 4 * 128) == 0.4  # a rate used as given
