"""Stream a long token sequence through the shared GPT one token at a time with the KV cache,
and print milliseconds per token along the stream.

    python benchmarks/kv_cache.py                      # 4,096 tokens, d_model 64, 4 layers
    python benchmarks/kv_cache.py --tokens 8192 --window 256

Two caches: the full one (every token kept: attention reads all S cached slots, so the time per
token may grow with S, but appending must not), and a bounded one that keeps the first 4 tokens
and the most recent ones (StreamingLLM's policy, read by the `Streamer` the experiments use),
whose time per token must stay flat, so that streaming n tokens costs time linear in n. The
cache's storage grows by doubling; the number of reallocations is printed too.
"""

from __future__ import annotations

import argparse
import time

import torch

from digestlab.configs import GPTConfig
from digestlab.device import seed_everything
from digestlab.nn import GPT
from digestlab.nn.cache import Policy, Streamer

SINKS = 4


def stream(model: GPT, tokens: torch.Tensor, window: int | None, segment: int
           ) -> tuple[list[float], int]:
    """Feed `tokens` one at a time through the experiments' `Streamer`; return ms/token per
    segment and the storage reallocations."""
    if window is None:
        streamer = Streamer(model, [Policy("full", "recent")], None, torch.Generator())
    else:  # keep the sinks and the most recent tokens, renumbered in the cache
        streamer = Streamer(model, [Policy("StreamingLLM", "recent", SINKS)], SINKS + window,
                            torch.Generator())
    times, start, storages = [], time.perf_counter(), set()
    for t in range(len(tokens)):
        streamer.read(tokens[t : t + 1])
        storages.add(streamer.cache.layers[0][0].untyped_storage().data_ptr())
        if (t + 1) % segment == 0:
            now = time.perf_counter()
            times.append((now - start) / segment * 1e3)
            start = now
    return times, len(storages) - 1


def main() -> None:
    """Parse arguments, stream through both caches and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=252, help="recent slots of the bounded cache")
    parser.add_argument("--segment", type=int, default=512)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    seed_everything(0)
    model = GPT(GPTConfig(block_size=args.tokens, n_layer=args.n_layer, d_model=args.d_model,
                          n_heads=4, n_kv_heads=4, head_dim=args.d_model // 4)).eval()
    tokens = torch.randint(0, 256, (args.tokens,), generator=torch.Generator().manual_seed(0))
    full, full_allocations = stream(model, tokens, None, args.segment)
    bounded, bounded_allocations = stream(model, tokens, args.window, args.segment)
    print(f"{args.tokens:,} tokens, d_model {args.d_model}, {args.n_layer} layers, "
          f"{args.threads} thread(s); ms per token by segment of {args.segment}")
    print(f"{'tokens':>12} {'full cache':>11} {'sinks+window':>13}")
    for i, (a, b) in enumerate(zip(full, bounded, strict=True)):
        print(f"{i * args.segment:>5}-{(i + 1) * args.segment:<6} {a:>11.3f} {b:>13.3f}")
    print(f"storage reallocations: full {full_allocations}, bounded {bounded_allocations}")
    print(f"last/first segment: full {full[-1] / full[0]:.2f}x, "
          f"bounded {bounded[-1] / bounded[0]:.2f}x")


if __name__ == "__main__":
    main()
