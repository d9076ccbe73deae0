"""The transformer every experiment uses, and its KV cache."""

from digestlab.configs import GPTConfig
from digestlab.nn.cache import KVCache
from digestlab.nn.model import GPT, share_initial_weights

__all__ = ["GPT", "GPTConfig", "KVCache", "share_initial_weights"]
