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


class Parity(BaseModel):
    """The loss-parity runs: a small model trained long enough in bf16 autocast for rounding to
    compound, once per seed with each lever, so that what a lever does to the final loss is
    judged against what a change of seed does."""

    model_config = ConfigDict(extra="forbid")

    model: GPTConfig
    steps: int = Field(gt=1)  # optimizer steps of each run
    batch_size: int = Field(gt=0)  # sequences per step: the global batch at every world size
    seq_len: int = Field(gt=0)  # tokens per sequence
    eval_batches: int = Field(gt=0)  # validation batches the final loss is measured on
    seeds: int = Field(ge=2)  # seeds 0, 1, ...: each trains eager, compiled and sharded runs


class Params(BaseModel):
    """Everything the experiment takes."""

    model_config = ConfigDict(extra="forbid")

    model: GPTConfig  # a Llama-style model: SwiGLU, RMSNorm, RoPE, untied embeddings
    train: TrainConfig  # the loop's settings; compile and the seed are set per configuration
    batch_size: int = Field(gt=0)  # sequences per step of the timed runs
    seq_len: int = Field(gt=0)  # tokens per sequence, at most model.block_size
    n_documents: int = Field(gt=1)  # documents of the generated corpus
    repeats: int = Field(ge=2)  # rounds of timed runs, seeds 0, 1, ...
    world_sizes: list[int]  # FSDP world sizes (on a GPU, those with enough devices run)
    parity: Parity  # the loss-parity runs
    threads: int = Field(1, gt=0)  # CPU threads of each process
    memory_steps: int = Field(3, gt=1)  # steps of a memory run (CPU), past the first optimizer step
    memory_rounds: int = Field(2, ge=2)  # the first rounds, which also run memory runs (CPU)
    # every single-process run in the experiment's own process, sharing what it compiled (a
    # quick look: its timings and memory peaks are not each run's own); otherwise each timed or
    # memory run has processes of its own
    one_process: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.seq_len > self.model.block_size:
            raise ValueError(f"seq_len {self.seq_len} exceeds model.block_size "
                             f"{self.model.block_size}")
        if self.parity.seq_len > self.parity.model.block_size:
            raise ValueError(f"parity.seq_len {self.parity.seq_len} exceeds "
                             f"parity.model.block_size {self.parity.model.block_size}")
        if not self.memory_rounds <= self.repeats:
            raise ValueError(f"need memory_rounds ({self.memory_rounds}) <= repeats "
                             f"({self.repeats})")
        if 1 not in self.world_sizes or any(w < 1 for w in self.world_sizes):
            raise ValueError("world_sizes must include 1 and hold only sizes >= 1")
        if any(self.parity.batch_size % w for w in self.world_sizes):
            raise ValueError(f"parity.batch_size {self.parity.batch_size} must split evenly "
                             f"over every world size {self.world_sizes}")
        return self


# The fractions of blocks the memory-capped claim checkpoints: fms-fsdp's selective
# checkpointing (every second block) and every block.
SELECTIVE, FULL = 0.5, 1.0


@dataclass(frozen=True)
class Setup:
    """One configuration of the levers, as one run of the one training loop."""

    name: str
    seed: int = 0
    compile: bool = False  # each block through torch.compile, as torchtitan compiles
    checkpoint: float = 0.0  # fraction of blocks with activation checkpointing
    fsdp: bool = False
    world: int = 1  # processes (ranks); more than one only under FSDP
    bf16_params: bool = False  # FSDP mixed precision: bf16 parameters, fp32 reduction
    memory: bool = False  # a short run that measures peak memory only (see `setups`)
    parity: bool = False  # a loss-parity run: params.parity's model and steps, bf16 autocast


def checkpoint_name(fraction: float, compiled: bool = False) -> str:
    """The configuration that checkpoints `fraction` of the blocks, compiled or not."""
    lever = "compile" if compiled else "eager"
    return f"{lever} + checkpoint {fraction:g}" if fraction else lever


def setups(params: Params, gpu: bool) -> list[Setup]:
    """Every timed and memory run, in the order they run. The single-process configurations
    run in rounds, one seed per round, so each round is a block of paired runs close in time:
    eager, compiled, and compiled with the selective and the full checkpointing, in an order
    that turns from round to round.

    A GPU counts allocated bytes exactly, so its timed runs measure their own peak memory. On
    the CPU the peak resident set is what there is, and glibc's heap keeps freed memory:
    measured so, checkpointing half and all of the blocks peaked alike. So on the CPU each
    checkpointed fraction also gets short eager memory runs, in the first `memory_rounds` rounds,
    in which every large allocation is its own mapping, returned when freed: there the peaks
    repeat to 0.2 MB, but steps run 40% slower, so those runs time nothing. Compiling adds its
    own memory to a CPU process's resident set, so memory runs are eager."""
    runs = []
    for seed in range(params.repeats):
        timed = [Setup("eager", seed), Setup("compile", seed, compile=True),
                 Setup(checkpoint_name(SELECTIVE, True), seed, compile=True, checkpoint=SELECTIVE),
                 Setup(checkpoint_name(FULL, True), seed, compile=True, checkpoint=FULL)]
        turn = seed % len(timed)
        runs += timed[turn:] + timed[:turn]
        if not gpu and seed < params.memory_rounds:
            runs += [Setup(checkpoint_name(f), seed, checkpoint=f, memory=True)
                     for f in (0.0, SELECTIVE, FULL)]
    if gpu:
        runs.append(Setup("FSDP x1 + bf16 params", 0, fsdp=True, bf16_params=True))
    return runs


def parity_setups(params: Params, devices: int) -> list[list[Setup]]:
    """The loss-parity runs, as the jobs that run them: one process runs every seed eager and
    compiled; one group of ranks runs every seed under FSDP at each world size above 1 that
    `devices` allows. (FSDP on one process computes what eager training does, to the bit, so
    eager is the single-process reference.) Nothing in them is timed, so a job may run its seeds
    one after the other, and beside another job."""
    seeds = range(params.parity.seeds)
    alone = [Setup(name, seed, compile=compiled, parity=True)
             for seed in seeds for name, compiled in (("eager", False), ("compile", True))]
    worlds = [w for w in params.world_sizes if 1 < w <= devices]
    return [alone] + [[Setup(f"FSDP x{w}", seed, fsdp=True, world=w, parity=True)
                       for seed in seeds] for w in worlds]


# Seconds each scale may take with `snakemake --cores 2` (cpu) or on one H100-class GPU (gpu);
# benchmarks/experiment_budget.py checks them.
BUDGET_S = {"smoke": 30, "cpu": 360, "gpu": 600}

# Llama's MLP width: 8/3 d_model, rounded up to a multiple of 64 (256 at the gpu scale).
SCALES = {
    "smoke": Params(
        model=GPTConfig(block_size=32, n_layer=2, d_model=32, n_heads=2, n_kv_heads=2,
                        head_dim=16, mlp_hidden=128, tie_embeddings=False),
        train=TrainConfig(steps=4, learning_rate=3e-3, min_lr=3e-4, warmup_steps=1,
                          log_every=1),
        batch_size=2, seq_len=32, n_documents=40, repeats=2, memory_steps=2,
        world_sizes=[1, 2], one_process=True,
        parity=Parity(model=GPTConfig(block_size=32, n_layer=2, d_model=32, n_heads=2,
                                      n_kv_heads=2, head_dim=16, mlp_hidden=128,
                                      tie_embeddings=False),
                      steps=4, batch_size=2, seq_len=32, eval_batches=2, seeds=2),
    ),
    # Every process single-threaded: with two threads, step times of one configuration
    # wandered by 8% between runs on the 2-core machine. With one they still wander by 4-8%
    # from run to run, now and then by 20% (paired compile/eager ratios by 3-9%). The wandering
    # is per run, not per step, so rounds of short runs buy more than long runs. The parity
    # model is small so that 200 steps from each of eight seeds, with every lever, fit: with
    # six seeds of a 4-layer model, FSDP's shift was undecided ([-0.03, 1.13] seed sds), and
    # the experiment ran 424 s.
    "cpu": Params(
        model=GPTConfig(block_size=256, n_layer=4, d_model=256, n_heads=4, n_kv_heads=4,
                        head_dim=64, mlp_hidden=768, tie_embeddings=False),
        train=TrainConfig(steps=16, learning_rate=3e-3, min_lr=3e-4, warmup_steps=4,
                          log_every=1),
        batch_size=4, seq_len=256, n_documents=200, repeats=4, world_sizes=[1, 2],
        parity=Parity(model=GPTConfig(block_size=64, n_layer=2, d_model=64, n_heads=4,
                                      n_kv_heads=4, head_dim=16, mlp_hidden=192,
                                      tie_embeddings=False),
                      steps=200, batch_size=8, seq_len=64, eval_batches=8, seeds=8),
    ),
    # About 1.0B parameters (20 blocks of d_model 2048) on 16k tokens per step, each block
    # compiled on its own as torchtitan does, so that one block's compilation serves all 20.
    # Four rounds of four timed runs: enough for a t-interval on the compile speed-up (t(3) =
    # 2.35 against t(1) = 6.3 with two).
    "gpu": Params(
        model=GPTConfig(block_size=2048, n_layer=20, d_model=2048, n_heads=16, n_kv_heads=16,
                        head_dim=128, mlp_hidden=5632, tie_embeddings=False),
        train=TrainConfig(steps=20, learning_rate=3e-4, min_lr=3e-5, warmup_steps=5,
                          log_every=2),
        batch_size=8, seq_len=2048, n_documents=400, repeats=4, world_sizes=[1, 2],
        parity=Parity(model=GPTConfig(block_size=256, n_layer=6, d_model=384, n_heads=6,
                                      n_kv_heads=6, head_dim=64, mlp_hidden=1024,
                                      tie_embeddings=False),
                      steps=300, batch_size=16, seq_len=256, eval_batches=16, seeds=6),
    ),
}


# --- the post's claims, declared before any run -------------------------------------------------

# A lever keeps the loss when the final losses it gives shift, on average over seeds, by less
# than the seed-to-seed spread of the eager runs' final losses.
PARITY_BAND = our_bound(
    1.0,
    ko="같은 시드에서 덧셈의 순서와 커널 합치기만 다른 학습은 bf16에서 걸음마다 반올림이 달라지고, "
       "그 차이는 200걸음 동안 불어납니다. 그래도 그 결과가 시드를 바꿀 때의 퍼짐 안에 평균적으로 "
       "머문다면, 그 레버로 학습한 모델은 같은 학습에서 뽑은 또 하나의 표본일 뿐입니다. 그래서 "
       "경계는 eager 학습의 최종 손실이 시드 사이에서 갖는 표준편차 하나입니다.",
    en="Runs of one seed that differ only in how their sums are ordered and fused round "
       "differently at every bf16 step, and the difference grows over 200 steps. If the final "
       "losses still stay, on average, within the spread a change of seed gives, a model "
       "trained with the lever is one more draw from the same training. So the band is one "
       "standard deviation over seeds of the eager runs' final loss.")


def _shift(lever: str, reference: str) -> dict[str, ComparisonSpec]:
    """The two sides of a parity band: the mean over seeds of (final loss with the lever -
    final loss of the reference) / (sd over seeds of the eager final loss) lies within
    ±PARITY_BAND, the interval wholly inside."""
    statistic = {
        "ko": f"시드별 [loss({lever}) − loss({reference})] / 시드 사이 loss(eager)의 표준편차 "
              "(최종 검증 손실)",
        "en": f"[loss({lever}) − loss({reference})] / sd over seeds of loss(eager), per seed "
              "(final validation loss)"}
    below = PARITY_BAND.model_copy(update={"value": -PARITY_BAND.value})
    return {"shift, upper side": ComparisonSpec(statistic=statistic, direction="<",
                                                bound=PARITY_BAND),
            "shift, lower side": ComparisonSpec(statistic=statistic, direction=">", bound=below)}


COMPILE_SPEEDS_UP = ClaimSpec(
    id="compile-speeds-up",
    text={"ko": "torch.compile이 초당 학습 토큰 수를 10% 이상 높인다",
          "en": "torch.compile raises training tokens/s by at least 10%"},
    comparisons={"speed-up": ComparisonSpec(
        statistic={"ko": "라운드별 tokens/s(compile) / tokens/s(eager)",
                   "en": "tokens/s(compile) / tokens/s(eager), per round"}, direction=">",
        bound=paper_bound(1.10, "introduction: torch.compile improves training MFU by 10% to "
                                "23% across model sizes (the least of them)"),
        space="log")},
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
    text={"ko": "bf16에서 컴파일한 학습은 eager 학습과 같은 손실에 이른다",
          "en": "Compiled bf16 training reaches the same loss as eager training"},
    comparisons=_shift("compile", "eager"),
)

CHECKPOINTING_UNDER_A_CAP = ClaimSpec(
    id="selective-checkpointing-under-a-memory-cap",
    text={"ko": "메모리 상한이 체크포인팅 없는 최대 메모리의 75%일 때, 블록을 하나 걸러 "
                "체크포인팅하면 상한에 들고, 컴파일과 함께라면 모든 블록을 체크포인팅할 때보다 "
                "빠르다",
          "en": "Under a memory cap of 75% of the peak without checkpointing, checkpointing "
                "every second block fits, and with torch.compile it trains faster than "
                "checkpointing every block"},
    comparisons={
        "fits the cap": ComparisonSpec(
            statistic={"ko": "라운드별 memory(checkpoint 0.5) / memory(체크포인팅 없음)",
                       "en": "memory(checkpoint 0.5) / memory(no checkpointing), per round"},
            direction="<", space="log",
            bound=our_bound(
                0.75,
                ko="어떤 실행보다 먼저 정한 상한입니다. 체크포인팅 없이는 넘치지만(1 > 0.75) "
                   "절반의 블록을 체크포인팅하면 맞출 수 있을 만큼 여유를 둔, 체크포인팅 없는 "
                   "최대 메모리의 4분의 3입니다.",
                en="A cap fixed before any run: three quarters of the peak without "
                   "checkpointing, which training without checkpointing overflows (1 > 0.75) "
                   "and which checkpointing half the blocks has room to meet.")),
        "faster than checkpointing every block": ComparisonSpec(
            statistic={"ko": "라운드별 tokens/s(compile + checkpoint 0.5) / "
                             "tokens/s(compile + checkpoint 1)",
                       "en": "tokens/s(compile + checkpoint 0.5) / tokens/s(compile + "
                             "checkpoint 1), per round"},
            direction=">", space="log",
            bound=paper_bound(1.0, "introduction and MFU report: torch.compile with the "
                                   "selective activation checkpointing of the earlier work "
                                   "gives the best MFU")),
    },
    from_clock=True,
)

FSDP_WORLD_SIZE_KEEPS_THE_LOSS = ClaimSpec(
    id="fsdp-world-size-keeps-the-loss",
    kind="property",
    text={"ko": "같은 전역 배치에서 여러 프로세스에 걸친 bf16 FSDP 학습은 단일 프로세스 학습과 "
                "같은 손실에 이른다",
          "en": "bf16 FSDP training on several processes reaches the loss of single-process "
                "training at the same global batch"},
    comparisons=_shift("FSDP x2", "eager"),
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

CLAIMS = {c.id: c for c in (COMPILE_SPEEDS_UP, COMPILE_KEEPS_THE_LOSS, CHECKPOINTING_UNDER_A_CAP,
                            FSDP_WORLD_SIZE_KEEPS_THE_LOSS)}
