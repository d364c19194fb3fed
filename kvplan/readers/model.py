"""What a reader hands on: the cache layout, and beside it the config the weights are counted from.

The layout carries only typed cache facts. The weight counter reads many more keys than the cache rules (with
the same key accounting: a key that can shape the weights and that no rule read is named), so it gets the
config it reads explicitly, as :class:`ModelConfig`, never out of the layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvplan.layout import CacheLayout


@dataclass(frozen=True)
class ModelConfig:
    """The config a model's weights are counted from (empty for a GGUF file: its tensors are listed)."""

    #: The text config, plus what a multimodal wrapper keeps at its top level that applies to the decoder too.
    keys: dict[str, Any] = field(default_factory=dict)
    #: The keys of ``keys`` the cache rules consumed: the weight counter's key accounting starts from them.
    read_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ReadModel:
    """A model as its reader read it: the cache layout, and the config its weights are counted from."""

    layout: CacheLayout
    config: ModelConfig = field(default_factory=ModelConfig)
