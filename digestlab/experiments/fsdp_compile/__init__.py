"""FSDP2 and torch.compile (IBM and Meta's PyTorch teams, 2024): training throughput and MFU.

The spec: params, the configurations they expand to, scales, budgets and the post's claims.
`run.py` runs every configuration in processes of its own (`worker.py`, under `torchrun` when
there are several) and decides the claims.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.claims import (
    ClaimSpec,
    ComparisonSpec,
    PremiseSpec,
    TheirNumber,
    our_bound,
    paper_bound,
)
from digestlab.configs import GPTConfig, TrainConfig


class Params(BaseModel):
    """Everything the experiment takes."""

    model_config = ConfigDict(extra="forbid")

    model: GPTConfig  # a Llama-style model: SwiGLU, RMSNorm, RoPE, untied embeddings
    train: TrainConfig  # the loop's settings; compile and the seed are set per configuration
    batch_size: int = Field(gt=0)  # sequences per step: the global batch at every world size
    seq_len: int = Field(gt=0)  # tokens per sequence, at most model.block_size
    n_documents: int = Field(gt=1)  # documents of the generated corpus
    repeats: int = Field(ge=2)  # rounds of eager and compiled runs, seeds 0, 1, ...
    checkpoint_rounds: int = Field(ge=2)  # the first rounds, which also run each checkpointing
    checkpoint_fractions: list[float]  # fractions of blocks checkpointed; starts at 0
    world_sizes: list[int]  # FSDP world sizes (on a GPU, those with enough devices run)
    threads: int = Field(1, gt=0)  # CPU threads of each process
    memory_steps: int = Field(3, gt=1)  # steps of a memory run (CPU), past the first optimizer step
    memory_rounds: int = Field(2, ge=2)  # the first rounds, which also run memory runs (CPU)

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.seq_len > self.model.block_size:
            raise ValueError(f"seq_len {self.seq_len} exceeds model.block_size "
                             f"{self.model.block_size}")
        fractions = self.checkpoint_fractions
        if len(fractions) < 2 or fractions[0] != 0.0 or fractions != sorted(set(fractions)):
            raise ValueError("checkpoint_fractions must rise from 0 through at least two values")
        if fractions[-1] > 1.0:
            raise ValueError(f"a checkpointed fraction cannot exceed 1, got {fractions[-1]}")
        if not self.memory_rounds <= self.checkpoint_rounds <= self.repeats:
            raise ValueError(f"need memory_rounds ({self.memory_rounds}) <= checkpoint_rounds "
                             f"({self.checkpoint_rounds}) <= repeats ({self.repeats})")
        if 1 not in self.world_sizes or any(w < 1 for w in self.world_sizes):
            raise ValueError("world_sizes must include 1 and hold only sizes >= 1")
        if any(self.batch_size % w for w in self.world_sizes):
            raise ValueError(f"batch_size {self.batch_size} must split evenly over every world "
                             f"size {self.world_sizes}")
        return self


@dataclass(frozen=True)
class Setup:
    """One configuration of the levers, as one run of the one training loop."""

    name: str
    seed: int = 0
    compile: bool = False
    checkpoint: float = 0.0  # fraction of blocks with activation checkpointing
    fsdp: bool = False
    world: int = 1  # processes (ranks); more than one only under FSDP
    bf16_params: bool = False  # FSDP mixed precision: bf16 parameters, fp32 reduction
    memory: bool = False  # a short run that measures peak memory only (see `setups`)


def checkpoint_name(fraction: float) -> str:
    """The configuration that checkpoints `fraction` of the blocks (none: eager)."""
    return f"checkpoint {fraction:g}" if fraction else "eager"


def setups(params: Params, gpu: bool, devices: int) -> list[Setup]:
    """Every run, in the order they run. The single-process configurations run in rounds, one
    seed per round, so each round is a block of paired runs close in time: eager and compiled
    in `repeats` rounds, each checkpointed fraction in the first `checkpoint_rounds` of them.
    The FSDP runs, which the loss claims need once, follow.
    FSDP world sizes beyond `devices` are left out (one GPU cannot hold two NCCL ranks).

    A GPU counts allocated bytes exactly, so its runs measure their own peak memory. On the CPU
    the peak resident set is what there is, and glibc's heap keeps freed memory: measured so,
    checkpointing half and all of the blocks peaked alike. So on the CPU each checkpointed
    fraction also gets short memory runs, in the first `memory_rounds` rounds, in which every
    large allocation is its own mapping, returned when freed: there the peaks repeat to 0.2 MB,
    but steps run 40% slower, so those runs time nothing."""
    runs = []
    for seed in range(params.repeats):
        pair = [Setup("eager", seed), Setup("compile", seed, compile=True)]
        runs += pair[::-1] if seed % 2 else pair  # which runs first alternates
        if seed < params.checkpoint_rounds:
            runs += [Setup(checkpoint_name(f), seed, checkpoint=f)
                     for f in params.checkpoint_fractions[1:]]
        if not gpu and seed < params.memory_rounds:
            runs += [Setup(checkpoint_name(f), seed, checkpoint=f, memory=True)
                     for f in params.checkpoint_fractions]
    worlds = [w for w in params.world_sizes if w <= devices]
    runs += [Setup(f"FSDP x{w}", 0, fsdp=True, world=w) for w in worlds]
    runs.append(Setup(f"FSDP x{max(worlds)} + compile", 0, compile=True, fsdp=True,
                      world=max(worlds)))
    if gpu:
        runs.append(Setup("FSDP x1 + bf16 params", 0, fsdp=True, bf16_params=True))
    return runs


# Seconds each scale may take with `snakemake --cores 2` (cpu) or on one H100-class GPU (gpu);
# benchmarks/experiment_budget.py checks them.
BUDGET_S = {"smoke": 60, "cpu": 360, "gpu": 600}

# Llama's MLP width: 8/3 d_model, rounded up to a multiple of 256.
SCALES = {
    "smoke": Params(
        model=GPTConfig(block_size=64, n_layer=2, d_model=64, n_heads=2, n_kv_heads=2,
                        head_dim=32, mlp_hidden=256, tie_embeddings=False),
        train=TrainConfig(steps=8, learning_rate=3e-3, min_lr=3e-4, warmup_steps=2,
                          log_every=1),
        batch_size=4, seq_len=64, n_documents=40, repeats=2, checkpoint_rounds=2, memory_steps=2,
        checkpoint_fractions=[0.0, 1.0], world_sizes=[1, 2],
    ),
    # Every process single-threaded: with two threads, step times of one configuration
    # wandered by 8% between runs on the 2-core machine. With one they still wander by 4-8%
    # from run to run, now and then by 20% (paired compile/eager ratios by 3-9%), while
    # compiling gains about 5% here. The wandering is per run, not per step, so rounds of
    # short runs buy more than long runs: seven rounds of 16 steps.
    "cpu": Params(
        model=GPTConfig(block_size=256, n_layer=4, d_model=256, n_heads=4, n_kv_heads=4,
                        head_dim=64, mlp_hidden=768, tie_embeddings=False),
        train=TrainConfig(steps=16, learning_rate=3e-3, min_lr=3e-4, warmup_steps=4,
                          log_every=1),
        batch_size=4, seq_len=256, n_documents=200, repeats=7, checkpoint_rounds=3,
        checkpoint_fractions=[0.0, 0.5, 1.0], world_sizes=[1, 2],
    ),
    # About 1.0B parameters (20 blocks of d_model 2048) on 16k tokens per step.
    "gpu": Params(
        model=GPTConfig(block_size=2048, n_layer=20, d_model=2048, n_heads=16, n_kv_heads=16,
                        head_dim=128, mlp_hidden=5632, tie_embeddings=False),
        train=TrainConfig(steps=20, learning_rate=3e-4, min_lr=3e-5, warmup_steps=5,
                          log_every=2),
        batch_size=8, seq_len=2048, n_documents=400, repeats=2, checkpoint_rounds=2,
        checkpoint_fractions=[0.0, 0.5, 1.0], world_sizes=[1, 2],
    ),
}


# --- the post's claims, declared before any run -------------------------------------------------

# A loss gap counts against the gap between two seeds' curves, measured in the same run.
AGREEMENT = our_bound(
    0.1,
    ko="같은 시드의 학습이 덧셈의 순서와 커널 합치기에서만 다르다면 "
       "시드를 바꿀 때 생기는 차이보다 훨씬 안쪽에 머물러야 합니다. 그 차이의 10분의 1은 반올림 "
       "오차가 들어설 자리는 남기되, 학습에 의미 있는 차이는 들이지 않습니다.",
    en="Runs of one seed that differ only in how their sums are "
       "ordered and fused should stay far inside the gap a change of seed opens; a tenth of "
       "that gap leaves room for rounding and none for a difference that would matter to "
       "training.")

# Only the direction: checkpointing saves memory and costs time, as the post's code says.
CHECKPOINTING_DIRECTION = paper_bound(
    1.0, "fms-fsdp (the post's code), docs/configurations.md: checkpointing more often saves "
         "more memory and increases the computation time")

COMPILE_SPEEDS_UP = ClaimSpec(
    id="compile-speeds-up",
    text={"ko": "torch.compile이 초당 학습 토큰 수를 10% 이상 높인다",
          "en": "torch.compile raises training tokens/s by at least 10%"},
    comparisons={"speed-up": ComparisonSpec(
        statistic={"ko": "라운드별 tokens/s(compile) / tokens/s(eager)",
                   "en": "tokens/s(compile) / tokens/s(eager), per round"}, direction=">",
        bound=paper_bound(1.10, "introduction: torch.compile improves training MFU by 10% to "
                                "23% across model sizes (the least of them)"),
        scale="log")},
    premises={"eager-leaves-the-matmul-units-idle": PremiseSpec(
        text={"ko": "장치가 글과 같은 영역에 있다: eager 학습이 행렬곱 유닛을 상당 시간 놀린다",
              "en": "The device is in the post's regime: eager training leaves the matmul "
                    "units idle much of the time"},
        statistic={"ko": "MFU(eager): eager 실행들의 중앙값, 같은 장치에서 잰 행렬곱 최고 "
                         "성능 대비",
                   "en": "MFU(eager), the median eager run, against the matmul peak measured on "
                         "the same device"},
        direction="<=",
        bound=our_bound(
            0.60,
            ko="컴파일은 메모리에 묶인 연산을 합치고 오버헤드를 줄여서 "
               "이득을 내는데, 이는 eager 학습이 행렬곱 유닛을 놀리는 곳에서만 의미가 있습니다. "
               "글의 eager FSDP 학습은 MFU 57%에 머물렀습니다.",
            en="Compile pays by fusing memory-bound work and "
               "cutting overhead, which only matters where eager training leaves the matmul "
               "units idle; the post's own eager FSDP runs sat at 57% MFU."))},
    theirs=TheirNumber(
        value=round(68 / 57, 3), where="introduction: MFU 57% → 68%, Llama 7B on A100 GPUs",
        note={"ko": "둘 다 FSDP와 선택적 활성화 체크포인팅을 쓴 MFU의 비이며, 토큰당 FLOPs가 "
                    "같으니 초당 토큰 수의 비와 같습니다",
              "en": "the ratio of two MFUs, both with FSDP and selective activation "
                    "checkpointing; at the same FLOPs per token it is the tokens/s ratio"}),
    from_clock=True,
)

COMPILE_KEEPS_THE_LOSS = ClaimSpec(
    id="compile-keeps-the-loss",
    text={"ko": "같은 시드에서 컴파일한 학습과 eager 학습의 손실 곡선이 일치한다",
          "en": "Compiled and eager training follow the same loss curve from the same seed"},
    comparisons={"loss-gap": ComparisonSpec(
        statistic={"ko": "라운드별 평균 |Δloss|(같은 시드의 컴파일 대 eager) / 평균 |Δloss|(시드 "
                         "사이의 eager)",
                   "en": "mean |Δloss| (compiled vs eager, same seed) / mean |Δloss| (eager, "
                         "between seeds), per round"},
        direction="<", bound=AGREEMENT, rule="every")},
    kind="property",
)


def checkpointing_step(quantity: str, low: float, high: float) -> str:
    """The name of the checkpointing claim's comparison of `quantity` ("memory", "tokens/s")
    between two checkpointed fractions."""
    return f"{quantity}, {low:g} → {high:g}"


def checkpointing_claim(fractions: list[float]) -> ClaimSpec:
    """The checkpointing claim over the steps up of `fractions` (as params fix them before any
    run): one comparison of per-round ratios for memory and one for tokens/s, per step up."""
    comparisons = {}
    for low, high in zip(fractions, fractions[1:], strict=False):
        for quantity in ("memory", "tokens/s"):
            comparisons[checkpointing_step(quantity, low, high)] = ComparisonSpec(
                statistic={
                    "ko": f"라운드별 {quantity}(checkpoint {high:g}) / "
                          f"{quantity}(checkpoint {low:g})",
                    "en": f"{quantity}(checkpoint {high:g}) / {quantity}(checkpoint {low:g}), "
                          "per round"},
                direction="<", bound=CHECKPOINTING_DIRECTION, scale="log")
    return ClaimSpec(
        id="checkpointing-trades-speed-for-memory",
        text={"ko": "활성화 체크포인팅을 더 많은 블록에 걸수록 최대 메모리와 처리량이 모두 "
                    "줄어든다",
              "en": "Checkpointing more blocks lowers both peak memory and throughput"},
        comparisons=comparisons, kind="property", from_clock=True)


FSDP_WORLD_SIZE_KEEPS_THE_LOSS = ClaimSpec(
    id="fsdp-world-size-keeps-the-loss",
    text={"ko": "같은 전역 배치에서 여러 프로세스에 걸친 FSDP 학습의 손실 곡선이 단일 프로세스와 "
                "일치한다",
          "en": "FSDP on several processes follows the single-process loss curve at the same "
                "global batch"},
    comparisons={"loss-gap": ComparisonSpec(
        statistic={"ko": "평균 |Δloss|(실행한 world size마다 FSDP 대 같은 시드의 eager) / 평균 "
                         "|Δloss|(시드 사이의 eager)",
                   "en": "mean |Δloss| (FSDP at each world size run vs eager, same seed) / "
                         "mean |Δloss| (eager, between seeds)"},
        direction="<", bound=AGREEMENT, rule="every")},
    premises={"two-or-more-processes": PremiseSpec(
        text={"ko": "프로세스 둘 이상에서 돌았다", "en": "Two or more processes ran"},
        statistic={"ko": "실행한 FSDP world size 가운데 가장 큰 값",
                   "en": "the largest FSDP world size run"}, direction=">=",
        bound=our_bound(
            2,
            ko="프로세스 수에 따른 차이를 묻는 주장이므로 둘 이상의 프로세스에서 돈 "
               "학습이 있어야 합니다. GPU 하나에는 NCCL 랭크 하나만 올라갑니다.",
            en="The claim is about the number of processes, so it needs a run on at "
               "least two; one GPU holds one NCCL rank."))},
)

# The checkpointing claim as the cpu and gpu scales' fractions make it; a run decides it over the
# steps up of its own params' fractions (`checkpointing_claim`), fixed before it starts.
CLAIMS = {c.id: c for c in (
    COMPILE_SPEEDS_UP, COMPILE_KEEPS_THE_LOSS,
    checkpointing_claim(SCALES["cpu"].checkpoint_fractions), FSDP_WORLD_SIZE_KEEPS_THE_LOSS)}
