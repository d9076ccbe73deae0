"""The transformer every experiment uses, and its KV cache."""

from digestlab.nn.cache import KVCache
from digestlab.nn.model import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "KVCache"]
