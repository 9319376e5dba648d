"""Model zoo: the SceneNet family (DeepLab-ResNet trunk + per-task ASPP heads) and its file format."""

from .io import load, open_model, read_spec, save
from .multitask import MultiTaskModel, build_model, count_parameters
from .record import TaskModel

__all__ = ["MultiTaskModel", "TaskModel", "build_model", "count_parameters", "load", "open_model", "read_spec",
           "save"]
