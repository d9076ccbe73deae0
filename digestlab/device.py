"""One place to pick the device, seed every generator, wait for the device, and know the
hardware's peak FLOP/s and how much memory a process holds."""

from __future__ import annotations

import platform
import random
import resource
import time
from pathlib import Path

import torch

# Dense bf16 tensor-core throughput from the vendors' spec sheets, in FLOP/s (no sparsity).
# Matched against the lower-cased device name in order, so specific names precede general ones.
SPEC_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("gh200", 989.4e12),
    ("h200", 989.4e12),
    ("h100 pcie", 756.0e12),
    ("h100 nvl", 835.0e12),
    ("h100", 989.4e12),
    ("h800", 989.4e12),
    ("b200", 2250.0e12),
    ("a100", 312.0e12),
    ("a800", 312.0e12),
    ("l40s", 362.0e12),
    ("l40", 181.0e12),
    ("l4", 121.0e12),
    ("a10g", 70.0e12),
    ("a10", 125.0e12),
)

_peak_flops_cache: dict[tuple[str, torch.dtype], float] = {}


def pick_device(requested: str = "auto") -> torch.device:
    """Return the device to run on: CUDA when present for "auto", else CPU; or the one named."""
    if requested == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
    if device.type == "cuda":
        # TF32 only affects the few fp32 matmuls left outside bf16 autocast; it is free speed.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (all devices) so a run repeats exactly on CPU."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    # CPU kernels are already deterministic for a fixed thread count; on CUDA, deterministic
    # algorithms would cost speed (and need CUBLAS_WORKSPACE_CONFIG), so they stay off there.
    if not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU torch.Generator seeded from `parts` (see digestlab.data.rng.derive_seed), for
    sampling that must repeat: the same parts give the same draws."""
    from digestlab.data.rng import derive_seed

    return torch.Generator().manual_seed(derive_seed(*parts) & 0x7FFF_FFFF_FFFF_FFFF)


def device_name(device: torch.device) -> str:
    """Return a human-readable name for the device: the GPU's name or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def spec_peak_flops(device: torch.device) -> float | None:
    """Return the spec-sheet dense bf16 FLOP/s of a known GPU, or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = device_name(device).lower()
    for key, flops in SPEC_BF16_FLOPS:
        if key in name:
            return flops
    return None


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work to finish (a no-op on the CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Measure achievable matmul FLOP/s on the device in the dtype (best of a few square
    products); the result is cached per (device, dtype) for the life of the process."""
    key = (str(device), dtype)
    if key in _peak_flops_cache:
        return _peak_flops_cache[key]
    # Large enough to reach the kernel's plateau (on the 2-core EPYC 1024 and 2048 measured
    # the same FLOP/s), small enough to take a fraction of a second on the CPU.
    size = 8192 if device.type == "cuda" else 1024
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    for _ in range(3):  # warm up the allocator, the thread pool and the clocks
        torch.mm(a, b)
    synchronize(device)
    best_seconds = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best_seconds = min(best_seconds, time.perf_counter() - start)
    peak = 2 * size**3 / best_seconds
    _peak_flops_cache[key] = peak
    return peak


def memory_in_use(device: torch.device) -> int:
    """Bytes held now: tensors allocated on a GPU, or the process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    with open("/proc/self/statm") as f:  # Linux: pages of the process resident in memory
        return int(f.read().split()[1]) * resource.getpagesize()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory` (on the CPU the process's peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    """Most bytes held since `reset_peak_memory`: allocated tensors on a GPU; on the CPU the
    process's high-water resident set since it started (so measure in a fresh process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # Linux reports KiB, and raises its high-water mark only at some events (an unmapping, say),
    # so the resident set of this moment may lie above it.
    high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(high_water, memory_in_use(device))
