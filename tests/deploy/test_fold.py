"""BN folding changes no output: every registered model, in eval mode, with non-trivial BN statistics."""
import pytest
import timm
import torch
import torch.nn as nn

import microdense  # noqa: F401  (registers the models)
from microdense.deploy.fold import fold_batchnorm
from microdense.models import list_models


def _perturb_batchnorm(model: nn.Module) -> None:
    """Statistics and affine parameters away from their init, so a wrong fold would show."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(1 + 0.1 * torch.rand(n, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))


@pytest.mark.parametrize("name", list_models())
def test_folded_model_equals_the_source(name):
    model = timm.create_model(name).eval()
    _perturb_batchnorm(model)
    # NOTE: a small input keeps 19 models cheap; every network here is fully convolutional before its pool
    side = 16 if model.pretrained_cfg["input_size"][1] == 32 else 64
    x = torch.randn(1, 3, side, side)
    folded, report = fold_batchnorm(model)
    assert report.traced and report.folded > 0
    # NOTE: the traced graph holds what forward runs: DARTS's training-only auxiliary head is not exported.
    aux = getattr(model, "auxiliary_head", None) or nn.Identity()
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - sum(
        isinstance(m, nn.BatchNorm2d) for m in aux.modules())
    assert report.folded + report.kept == before
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == report.kept
    from conftest import fp32_noise
    with torch.no_grad():
        expected = model(x)
        # NOTE: within 1e-5 of the logits' scale, or 4x the model's own float32 rounding (deep untrained nets)
        atol = max(1e-5 * float(expected.abs().max()), 4 * fp32_noise(model, x))
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=atol)
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # source intact


def test_post_activation_resnet_folds_every_bn():
    _, report = fold_batchnorm(timm.create_model("resnet110_cifar"))
    assert report.kept == 0 and report.folded == 111


@pytest.mark.parametrize("name, folded, kept",
                         [("microdensenet_cifar_tiny", 12, 16), ("microdensenet_cifar_base", 36, 56)])
def test_pre_activation_micro_dense_nets_fold_what_the_readme_says(name, folded, kept):
    """Only the BNs right after a conv fold (each layer's bottleneck, the projection shortcuts); the figures quoted
    in the README and docs/performance.md."""
    _, report = fold_batchnorm(timm.create_model(name))
    assert (report.folded, report.kept) == (folded, kept)
