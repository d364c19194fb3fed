"""Family facts more than one module tests: each written once, here.

A family is a config's ``model_type`` (the text config's, for a multimodal wrapper). The cache reader, the weight
counter and the engines all ask some of the same questions of it ("is this Falcon", "is this a pure SSM"); the
answer lives here so they cannot drift apart. Rules that only one module needs stay in that module.
"""

from __future__ import annotations

#: Falcon: transformers' FalconConfig ("falcon") and tiiuae's remote-code RWConfig spellings, "RefinedWeb"
#: (Falcon-40B style: the new decoder architecture) and "RefinedWebModel" (Falcon-7B style). In this order
#: wherever a table lists them.
FALCON_FAMILIES = ("falcon", "RefinedWeb", "RefinedWebModel")

#: Pure state-space models: Mamba (MambaConfig), Falcon-Mamba (FalconMambaConfig) and Mamba2 (Mamba2Config).
#: No attention at all: their head keys (Mamba2 num_heads, head_dim) are SSM dims.
PURE_SSM_FAMILIES = frozenset({"mamba", "falcon_mamba", "mamba2"})


def falcon_new_decoder(family: str, new_decoder_architecture: bool) -> bool:
    """Whether a Falcon config is the new decoder architecture (Falcon-40B / 180B): FalconConfig says so with
    ``new_decoder_architecture``; tiiuae's RefinedWeb configs are it without the key. The architecture has
    grouped K/V heads (n_head_kv) and, with parallel_attn, two LayerNorms per layer; transformers'
    FalconAttention expands K/V to every query head before it caches them (modeling_falcon.py)."""
    return family in FALCON_FAMILIES and (new_decoder_architecture or family == "RefinedWeb")


def is_gemma3(model_type: str) -> bool:
    """Gemma 3 and its variants (gemma3, gemma3_text, gemma3n, gemma3n_text): vLLM treats their
    max_position_embeddings as already RoPE-scaled."""
    return "gemma3" in model_type
