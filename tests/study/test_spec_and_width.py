"""Study files, the run plan and its shards, and the params_like width solver."""
import math
from dataclasses import replace

import pytest
import torch
from timm.layers import make_divisible

from microdense.models import create_model
from microdense.models.micro_dense_net import model_cfgs, scale_widths
from microdense.models.size import count_params
from microdense.study.spec import load_study, packaged_studies, parse_shard, parse_study, plan, smoke
from microdense.study.width import match_params, param_count

TINY = "microdensenet_cifar_tiny"
BASE_STUDY = dict(budget={"epochs": 1}, seeds=[0, 1], entries=[{"model": TINY, "label": "a"},
                                                               {"model": "resnet20_cifar", "label": "b"}])


def study(**changes):
    return parse_study({**BASE_STUDY, **changes}, "s", "study file s.yaml")


@pytest.mark.parametrize("changes, message", [
    (dict(epoch={"x": 1}), r"unknown field\(s\) \['epoch'\]"),
    (dict(budget={"epochs": 1, "steps": 3}), "budget must set exactly one of epochs, steps, time_budget"),
    (dict(budget={"minutes": 3}), "budget must set exactly one"),
    (dict(seeds=[0, 0]), "seeds must be a list of distinct"),
    (dict(seeds=[]), "seeds must be a list of distinct"),
    (dict(entries=[]), "entries must be a non-empty list"),
    (dict(entries=[{"model": TINY, "width": 2}]), r"entry 1 has unknown field\(s\) \['width'\]"),
    (dict(entries=[{"model": TINY, "label": "x"}, {"model": TINY, "label": "X"}]), "are not distinct"),
    (dict(entries=[{"model": TINY, "params_like": "nobody"}]), "params_like 'nobody', which is no entry's label"),
    (dict(reference="c"), "reference 'c' is no entry's label"),
    (dict(overrides={"epochs": 5}), r"overrides may not set \['run.epochs'\]"),
    (dict(overrides={"learning_rate": 0.1}), "unknown field 'learning_rate'"),
    (dict(entries=[{"model": TINY, "overrides": {"seed": 3}}]), r"entry 1's overrides may not set \['run.seed'\]"),
    (dict(entries=[{"model": TINY, "overrides": [1]}]), "entry 1's overrides must be a mapping"),
])
def test_a_bad_study_file_is_refused_with_what_to_fix(changes, message):
    with pytest.raises(ValueError, match=message):
        study(**changes)


def test_the_fields_a_study_owns_are_training_fields():
    from microdense.study.spec import RUN_FIELDS
    from microdense.train.config import FIELDS
    assert set(RUN_FIELDS) <= set(FIELDS)


def test_entry_overrides_change_that_entry_s_runs_alone(tmp_path):
    from microdense.study.spec import run_train_config
    # the sections' layout, dotted names and the flat layout of older study files all read the same
    s = study(overrides={"optim": {"label_smoothing": 0.2}},
              entries=[{"model": TINY, "label": "a"},
                       {"model": TINY, "label": "ema", "overrides": {"optim.ema_decay": 0.99, "val_flip": True}}])
    a, ema = (run_train_config(s, {}, s.entry(label), 0, tmp_path) for label in ("a", "ema"))
    assert (a.optim.ema_decay, ema.optim.ema_decay) == (0.0, 0.99) and (a.run.val_flip, ema.run.val_flip) == (
        False, True)
    assert a.optim.label_smoothing == ema.optim.label_smoothing == 0.2 and a.run.epochs == ema.run.epochs == 1


def test_plan_is_seed_by_seed_and_shards_partition_it():
    s = study()
    runs = plan(s)
    assert [(r.entry.label, r.seed) for r in runs] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert [r.name for r in runs] == ["a-seed0", "b-seed0", "a-seed1", "b-seed1"]
    for n in (1, 2, 3, 5):
        shards = [{r.name for r in runs if r.index % n == i} for i in range(n)]
        assert set().union(*shards) == {r.name for r in runs}
        assert sum(map(len, shards)) == len(runs)  # disjoint


@pytest.mark.parametrize("text", ["3/2", "2/2", "1/0", "-1/2", "a/b", "1"])
def test_a_shard_outside_its_count_is_refused(text):
    with pytest.raises(ValueError, match="is not I/N with 0 <= I < N"):
        parse_shard(text)


def test_shard_parses():
    assert parse_shard(None) == (0, 1) and parse_shard("2/3") == (2, 3) and parse_shard(" 0 / 1 ") == (0, 1)


def test_smoke_keeps_every_entry_one_seed_few_synthetic_steps():
    s = smoke(study())
    assert [e.label for e in s.entries] == ["a", "b"] and s.seeds == (0,)
    assert s.data["name"] == "synthetic" and s.budget == {"steps": 2}


def test_every_packaged_study_names_a_claim_and_loads():
    names = set(packaged_studies())
    assert {"ablation", "group-width", "baselines", "baselines-cpu", "nas", "paper-cifar10", "paper-cifar100",
            "imagenet"} <= names
    for name in names:
        s = load_study(name)
        assert s.claim and len(s.seeds) >= 2 and s.reference in [e.label for e in s.entries]


def test_unknown_study_name_lists_the_packaged_ones():
    with pytest.raises(ValueError, match="no study file 'ablaton'.*packaged studies are ablation"):
        load_study("ablaton")


# --- the width knob and the solver --------------------------------------------------------------------------------


def test_width_multiplier_none_is_the_model_itself():
    torch.manual_seed(0)
    plain = create_model(TINY)
    torch.manual_seed(0)
    same = create_model(TINY, width_multiplier=None)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), same.state_dict().values()))


@pytest.mark.parametrize("kwargs", [{}, dict(group_width=32), dict(cardinality="none"), dict(pyramid="constant")])
def test_scaled_widths_obey_the_block_rules_and_grow_the_net(kwargs):
    counts = []
    for m in (0.3, 0.55, 0.8, 1.0, 1.3, 2.0):
        model = create_model(TINY, width_multiplier=m, **kwargs)  # would raise on a broken divisibility rule
        counts.append(count_params(model))
    assert counts == sorted(counts) and counts[0] < counts[-1] / 4


@pytest.mark.parametrize("multiplier", [0.3, 0.52, 0.864, 1.044, 1.3, 2.0])
@pytest.mark.parametrize("group_width", [4, 8, 16, 32])
def test_scale_widths_keeps_every_channel_count_a_multiple_of_8(multiplier, group_width):
    cfg = scale_widths(replace(model_cfgs[TINY], stages=tuple(
        replace(s, block=replace(s.block, group_width=group_width)) for s in model_cfgs[TINY].stages)), multiplier)
    assert [s.block.base_width % math.lcm(8, group_width) for s in cfg.stages] == [0, 0, 0]
    assert cfg.stem_width == make_divisible(16 * multiplier, 8)
    from conftest import conv_channel_counts
    counts = conv_channel_counts(create_model(TINY, group_width=group_width, width_multiplier=multiplier))
    assert counts and [c for c in counts if c % 8] == []
    with pytest.raises(ValueError, match="width_multiplier: must be > 0"):
        scale_widths(model_cfgs[TINY], 0)


@pytest.mark.parametrize("kwargs", [dict(aggregation="residual"), dict(aggregation="dense"), dict(pyramid="constant"),
                                    dict(cardinality="fixed"), dict(cardinality="none"), dict(group_width=32)])
def test_params_like_brings_each_ablation_within_3_percent(kwargs):
    target = param_count(TINY, {})
    match = match_params(TINY, kwargs, target)
    assert match.knob == "width_multiplier" and match.kwargs == {**kwargs, "width_multiplier": match.value}
    built = count_params(create_model(TINY, **match.kwargs))  # counted on a real model, not the solver's
    assert built == match.params and abs(built / target - 1) <= 0.03


def test_params_like_scales_an_int_knob():
    target = param_count("darts_v2_cifar", dict(layers=8, init_channels=24))
    match = match_params("microdense_darts_v2_cifar", dict(layers=8), target)
    assert match.knob == "init_channels" and isinstance(match.value, int)
    assert abs(count_params(create_model("microdense_darts_v2_cifar", **match.kwargs)) / target - 1) <= 0.03


def test_params_like_refuses_what_it_cannot_reach():
    with pytest.raises(ValueError, match=r"cannot come within ±3% of 50 parameters by growth_rate"):
        match_params("densenet_bc100_k12_cifar", {}, 50)
    # a whole C changes the DARTS host by ~20% here: the gap holds no value within 3%
    target = param_count("darts_v2_cifar", dict(layers=8, init_channels=16))
    with pytest.raises(ValueError, match="cannot come within ±3%.*init_channels=9.*init_channels=10"):
        match_params("microdense_darts_v2_cifar", dict(layers=8), target)


def test_params_like_refuses_a_model_without_knob_or_a_knob_set_twice():
    with pytest.raises(ValueError, match=r"resnet20_cifar \(CifarResNet\) has no width knob"):
        match_params("resnet20_cifar", {}, 100_000)
    with pytest.raises(ValueError, match="sets width_multiplier itself"):
        match_params(TINY, dict(width_multiplier=2.0), 100_000)


def test_entries_default_their_label_to_the_model():
    s = parse_study({**BASE_STUDY, "entries": [{"model": TINY}]}, "s", "f")
    assert s.entries[0].label == TINY and s.reference == TINY


def test_sizes_are_matched_at_the_data_s_class_count(tmp_path):
    from conftest import make_image_tree
    from microdense.study.runner import _data_classes, resolve_entries
    from microdense.study.spec import with_data

    def resolve(st):
        return resolve_entries(st, _data_classes(st))

    tree = make_image_tree(tmp_path / "images", classes=4, per_class=1)
    s = with_data(study(entries=[{"label": "a", "model": TINY},
                                 {"label": "b", "model": TINY, "kwargs": {"pyramid": "constant"}, "params_like": "a"}]),
                  "imagefolder", str(tree))
    resolved = resolve(s)
    assert resolved["a"].params == param_count(TINY, {"num_classes": 4})
    assert abs(resolved["b"].params / resolved["a"].params - 1) <= 0.03
    with pytest.raises(FileNotFoundError, match="data folder .*missing does not exist"):
        resolve(with_data(s, None, str(tmp_path / "missing")))
