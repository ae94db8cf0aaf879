"""Every variant meets its docs/design.md target, and golden counts catch silent drift."""
import pytest
import timm
import torch

import microdense  # noqa: F401
from microdense.models.size import measure_size
from microdense.models import resolve_input_size

# Parameters at the family's class count (10 CIFAR, 1000 ImageNet); MACs at its input size.
GOLDEN = {
    "microdensenet_cifar_tiny": (260_506, 43_452_288),
    "microdensenet_cifar_small": (1_070_122, 166_758_912),
    "microdensenet_cifar_base": (4_014_890, 694_461_440),
    "microdensenet_cifar_large": (11_156_218, 1_643_404_800),
    "microdensenet_imagenet_small": (7_049_096, 1_431_687_168),
    "microdensenet_imagenet_base": (19_498_312, 3_277_777_920),
}

# (low, high) bounds from docs/design.md §1.7: "about" = ±25% for the exploratory sizes, ±3% for base.
PARAM_TARGETS = {
    "microdensenet_cifar_tiny": (0.25e6 * 0.75, 0.25e6 * 1.25),
    "microdensenet_cifar_small": (1e6 * 0.75, 1e6 * 1.25),
    "microdensenet_cifar_base": (4.0e6 * 0.97, 4.0e6 * 1.03),
    "microdensenet_cifar_large": (12e6 * 0.75, 12e6 * 1.25),
}
MAC_BUDGETS = {"microdensenet_imagenet_small": 1.8e9, "microdensenet_imagenet_base": 4.1e9}


@pytest.fixture(scope="module")
def sizes():
    out = {}
    for name in GOLDEN:
        model = timm.create_model(name)
        out[name] = measure_size(name, model, resolve_input_size(model))
    return out


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_counts(sizes, name):
    assert (sizes[name].params, sizes[name].macs) == GOLDEN[name]


@pytest.mark.parametrize("name", PARAM_TARGETS)
def test_cifar_param_targets(sizes, name):
    low, high = PARAM_TARGETS[name]
    assert low <= sizes[name].params <= high


@pytest.mark.parametrize("name", MAC_BUDGETS)
def test_imagenet_mac_budgets(sizes, name):
    assert sizes[name].macs <= MAC_BUDGETS[name]


def test_stage_rows_add_up(sizes):
    s = sizes["microdensenet_cifar_base"]
    assert [st.width for st in s.stages] == [128, 256, 512]
    assert [st.blocks for st in s.stages] == [4, 4, 3]
    model = timm.create_model("microdensenet_cifar_base")
    outside = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("stages."))
    assert sum(st.params for st in s.stages) + outside == s.params
    assert sum(st.macs for st in s.stages) < s.macs
    # the stage rows `microdense info microdensenet_cifar_base` prints (README "Variants")
    assert [(st.params, st.macs) for st in s.stages] == [(263_232, 263_192_576), (1_016_064, 256_901_120),
                                                         (2_728_576, 173_477_888)]


def test_macs_are_half_the_counted_flops():
    """A 1x1 conv with known shape: MACs = H*W*Cin*Cout exactly."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1, bias=False))
    assert measure_size("conv", net, (3, 4, 4)).macs == 4 * 4 * 3 * 8


# docs/design.md §2: published sizes at 10 classes; each must round to it or lie within 2% of it.
PUBLISHED = {
    "resnet20_cifar": 0.27e6,
    "resnet56_cifar": 0.85e6,
    "resnet110_cifar": 1.7e6,
    "preact_resnet164_cifar": 1.7e6,
    "wrn28_10_cifar": 36.5e6,
    "resnext29_8x64d_cifar": 34.4e6,
    "densenet_bc100_k12_cifar": 0.8e6,
    "densenet_bc190_k40_cifar": 25.6e6,
    "pyramidnet110_a48_cifar": 1.7e6,
    "resnet18_cifar": 11.2e6,
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_baselines_at_published_size(name):
    params = sum(p.numel() for p in timm.create_model(name, num_classes=10).parameters())
    published = PUBLISHED[name]
    rounds_to = round(params / 1e6, 1) == round(published / 1e6, 1)  # published to one decimal of millions
    assert rounds_to or abs(params - published) <= 0.02 * published, f"{name}: {params / 1e6:.3f}M"


@pytest.mark.parametrize("name", GOLDEN)
def test_every_channel_count_is_a_multiple_of_8(name):
    """Widths the CPU and GPU kernels have fast paths for (and oneDNN's strided 1x1 fault never meets)."""
    from conftest import conv_channel_counts
    counts = conv_channel_counts(timm.create_model(name))
    assert counts and [c for c in counts if c % 8] == []
