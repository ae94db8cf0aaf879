"""CIFAR baselines at their published sizes; importing registers them with timm."""
from microdense.models.baselines import (  # noqa: F401
    densenet_cifar, preact_resnet_cifar, pyramidnet_cifar, resnet_cifar)
