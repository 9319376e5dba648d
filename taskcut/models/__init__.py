"""Model zoo: the SceneNet family (DeepLab-ResNet trunk + per-task ASPP heads) and its file format."""

from .io import load, read_spec, save
from .multitask import MultiTaskModel, build_model, count_parameters

__all__ = ["MultiTaskModel", "build_model", "count_parameters", "load", "read_spec", "save"]
