"""Readers: a model's own description (config.json / params.json, GGUF headers) -> a cache layout."""
