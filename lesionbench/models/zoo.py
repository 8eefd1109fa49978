"""Imports every model module so its ``@register_model`` decorators fill the registry."""

from lesionbench.models import (  # noqa: F401
    convnext_unet,
    fct,
    mobilenet_unet,
    pspnet,
    resnet50_unet,
    smp_zoo,
    unet,
    unetpp,
)
