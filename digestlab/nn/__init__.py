"""The transformer every experiment uses, its KV cache, and how to read and steer it."""

from digestlab.configs import GPTConfig
from digestlab.nn.cache import KVCache
from digestlab.nn.model import GPT

__all__ = ["GPT", "GPTConfig", "KVCache"]
