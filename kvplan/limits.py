"""The stated bounds on what kvplan reads and works through, so a hostile or broken input fails fast.

Each limit is far above any real model or GPU file and is named in the message that enforces it.
"""

from __future__ import annotations

#: The largest config.json / params.json / GPU YAML file read (the largest real config.json is well under 1 MiB;
#: a 20,000-entry GPU file is about 6 MiB).
MAX_FILE_BYTES = 16 * 2**20

#: JSON nesting deeper than this is refused (real configs nest 3 or 4 levels: text_config.rope_scaling...).
MAX_JSON_DEPTH = 64

#: Decoder layers a config may declare (the deepest real models have a few hundred). The layout keeps one spec
#: per layer, so this bounds the work of every command.
MAX_LAYERS = 4096

#: Attention heads a config may declare (real models have at most a few hundred). With this bound, listing every
#: G that divides the heads takes at most sqrt(MAX_HEADS) = 1,024 trial divisions.
MAX_HEADS = 2**20

#: The largest count (tokens, sequences) or byte size a flag or a config may give: 2^63 - 1, the largest
#: int64 value engines store such numbers in. Products of such counts are exact Python ints.
MAX_COUNT = 2**63 - 1

#: Seconds to wait for the Hugging Face Hub (connect or a stalled read) before giving up on one small file.
#: HF_HUB_ETAG_TIMEOUT, when set, wins.
HUB_TIMEOUT_S = 5.0
