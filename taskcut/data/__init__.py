"""Data sets: the embedded `synth` scenes (generated locally) and their readers."""

from .dataset import SynthDataset, iterate_batches, open_dataset
from .store import read_manifest, write_synth
from .synth import CLASS_NAMES, OBJECT_CLASSES, SynthOptions, render

__all__ = ["CLASS_NAMES", "OBJECT_CLASSES", "SynthDataset", "SynthOptions", "iterate_batches", "open_dataset",
           "read_manifest", "render", "write_synth"]
