"""A model section builds exactly the network it describes, in every family: a value set is passed as it is (0.0
included), a value left unset keeps the family's own default, and what a family cannot take is refused up front."""
import pytest
import torch
from timm.layers import DropPath

from microdense.errors import MicrodenseError
from microdense.models.config import ModelCfg, build_model, model_args

FAMILIES = ["microdensenet_cifar_tiny", "resnet20_cifar", "preact_resnet164_cifar", "pyramidnet110_a48_cifar",
            "darts_v2_cifar", "microdense_darts_v2_cifar"]


def drop_path_rate_of(model: torch.nn.Module) -> float:
    """The stochastic-depth rate the network will reach: DARTS's final rate, or its deepest DropPath's."""
    if hasattr(model, "drop_path_rate") and hasattr(model, "set_progress"):
        return model.drop_path_rate
    return max((m.drop_prob for m in model.modules() if isinstance(m, DropPath)), default=0.0)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_every_family_gets_exactly_the_configured_rates(name, rate):
    cfg = ModelCfg(name=name, drop_rate=rate / 2, drop_path_rate=rate)
    with torch.device("meta"):
        model = build_model(cfg, num_classes=7)
    assert model.num_classes == 7 and model.head.drop.p == rate / 2
    assert drop_path_rate_of(model) == pytest.approx(rate)  # 0.0 is a value: DARTS no longer falls back to its 0.2
    assert model_args(cfg, 7) == dict(num_classes=7, drop_rate=rate / 2, drop_path_rate=rate)


def test_an_unset_rate_keeps_the_family_default():
    with torch.device("meta"):
        darts = build_model(ModelCfg(name="darts_v2_cifar"), num_classes=10)
        tiny = build_model(ModelCfg(name="microdensenet_cifar_tiny"), num_classes=10)
    assert darts.drop_path_rate == 0.2 and drop_path_rate_of(tiny) == 0.0
    assert model_args(ModelCfg(), 10) == dict(num_classes=10)


def test_family_arguments_reach_the_network():
    cfg = ModelCfg(name="darts_cifar", kwargs=dict(genotype="DARTS_V1", layers=5, init_channels=8))
    with torch.device("meta"):
        model = build_model(cfg, num_classes=10)
    assert len(model.cells) == 5 and model.genotype.normal[0] == ("sep_conv_3x3", 1)  # DARTS_V1's first entry


@pytest.mark.parametrize("cfg, message", [
    (dict(name="densenet_bc100_k12_cifar", drop_path_rate=0.1), "cannot build densenet_bc100_k12_cifar"),
    (dict(name="microdensenet_cifar_tiny", kwargs=dict(base_width=12)), "base_width: 12 is not divisible"),
    (dict(name="microdensenet_cifar_tiny", kwargs=dict(num_classes=3)), "set model.num_classes"),
    (dict(name="resnet21_cifar"), "unknown model 'resnet21_cifar'"),
])
def test_what_a_family_cannot_build_is_refused_when_the_section_is_made(cfg, message):
    with pytest.raises(MicrodenseError, match=message):
        ModelCfg(**cfg)


def test_the_final_norm_follows_the_last_stage_ordering():
    from dataclasses import replace

    from microdense.models import MicroDenseNet
    from microdense.models.micro_dense_net import model_cfgs
    cfg = model_cfgs["microdensenet_cifar_tiny"]
    for last_preact in (True, False):
        stages = tuple(replace(s, block=replace(s.block, preact=(i == len(cfg.stages) - 1) == last_preact))
                       for i, s in enumerate(cfg.stages))
        net = MicroDenseNet(replace(cfg, stages=stages), num_classes=10)
        assert isinstance(net.final_norm, torch.nn.Identity) != last_preact  # a pre-activation end needs its BN-ReLU
