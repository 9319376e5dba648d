"""The shared rules of every settings file: one strict base model, one YAML loader, the bounds.

Apart from `config.py` (presets and run settings) so that the models, the fleet and the
own-model YAML use the same rules without importing each other.
"""

from __future__ import annotations

from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from .errors import TaskcutError


#: Most parameters a SceneNet config may ask for (the full ResNet-34 with 1024-wide heads has 137 M).
MAX_PARAMETERS = 2_000_000_000
#: Largest image side taskcut renders or trains at.
MAX_IMAGE_SIDE = 4096
#: Most threads a runtime is given (100000 crashed ONNX Runtime with a segfault).
MAX_THREADS = 256
#: Widest channel step structured pruning rounds to (runtimes use 4 to 64).
MAX_ROUND_TO = 256
#: Most images in one batch (a typo of 10^7 would ask for hundreds of GB).
MAX_BATCH = 4096
#: Most timed runs of one latency measurement.
MAX_RUNS = 10_000


class Strict(BaseModel):
    """The one strict base of every settings model (configs, own-model YAML, fleet files): unknown keys
    are errors, `true` is no number (YAML's bool is an int to Python) and `"yes"` or `1` is no boolean
    (pydantic's lax mode would take both)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        allowed = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) else {annotation}
        if isinstance(value, bool) and allowed & {int, float} and bool not in allowed:
            raise ValueError(f"expected a number, got {str(value).lower()}")
        if bool in allowed and not isinstance(value, bool) and value is not None:
            raise ValueError(f"expected true or false, got {value!r}")
        return value




#: Most nodes a YAML file may expand to once its aliases are followed (an alias bomb expands to billions).
MAX_YAML_NODES = 100_000


def safe_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load` with aliases bounded: the document's size with every alias expanded is counted
    on the composed graph (each node once) before anything is built, so a small file cannot expand
    into gigabytes here or in any later traversal or error message."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def size(n: yaml.Node) -> int:
            if id(n) in sizes:
                return sizes[id(n)]
            sizes[id(n)] = 1  # a cycle counts once
            if isinstance(n, yaml.SequenceNode):
                total = 1 + sum(size(c) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                total = 1 + sum(size(k) + size(v) for k, v in n.value)
            else:
                total = 1
            sizes[id(n)] = min(total, MAX_YAML_NODES + 1)
            return sizes[id(n)]

        if size(node) > MAX_YAML_NODES:
            raise TaskcutError(f"{source} expands to more than {MAX_YAML_NODES:,} YAML nodes (aliases); refused")
        return loader.construct_document(node)
    finally:
        loader.dispose()
