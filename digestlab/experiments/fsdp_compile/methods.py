"""The training levers the FSDP and torch.compile experiment measures, each credited to the paper
it comes from.

The post's recipe is FSDP with torch.compile and selective activation checkpointing, so those
levers are its proposed methods; eager single-process PyTorch is what each is set against. The
claims decided here are the post's, about its recipe, not the claims of the levers' own papers:
no lever names any. The
result's metrics hold the loss-parity runs, its timing the timed runs' speeds and the memory
peaks, round by round: a lever's loss rows come first (the headline, the same quantity for every
lever trained in the parity runs), then its speed and memory, which differ from run to run and
say so. Checkpointing, measured by speed and memory alone, heads with its memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from digestlab.claims import Text
from digestlab.experiments.fsdp_compile import FULL, SELECTIVE, checkpoint_name
from digestlab.methods import Method, Row, mean_row

METHODS = (
    Method(
        id="torch-compile", name="torch.compile",
        paper="https://doi.org/10.1145/3620665.3640366", role="proposed",
        how={"ko": "각 블록을 torch.compile로 컴파일한 학습을 같은 라운드의 eager 학습과 초당 "
                   "토큰 수로 비교하고, bf16으로 여러 시드를 학습해 최종 손실이 얼마나 "
                   "움직이는지 시드 사이의 퍼짐에 견줍니다.",
             "en": "Training with each block compiled by torch.compile is set against eager "
                   "training of the same round in tokens/s, and trained in bf16 from several "
                   "seeds to weigh its shift of the final loss against the spread over seeds."},
    ),
    Method(
        id="fsdp", name="FSDP", paper="2304.11277", role="proposed",
        how={"ko": "FSDP2(fully_shard)로 두 프로세스에 나눠 같은 전역 배치를 bf16으로 학습하고, "
                   "최종 손실이 단일 프로세스 학습에서 얼마나 움직이는지 시드 사이의 퍼짐에 "
                   "견줍니다.",
             "en": "Training sharded by FSDP2 (fully_shard) over two processes at the same "
                   "global batch in bf16, with its shift of the final loss from single-process "
                   "training weighed against the spread over seeds."},
    ),
    Method(
        # fms-fsdp's "selective" checkpointing, every second block, is Chen et al.'s block-level
        # checkpointing at a fraction of the blocks, not Korthikanti et al.'s recomputation of
        # attention's inner activations
        id="activation-checkpointing", name="activation checkpointing", paper="1604.06174",
        role="proposed",
        how={"ko": "블록을 하나 걸러 체크포인팅한 학습의 최대 메모리를 체크포인팅 없는 학습에, "
                   "컴파일과 함께 쓴 속도를 모든 블록을 체크포인팅한 학습에 라운드마다 견줍니다.",
             "en": "Checkpointing every second block is set, round by round, against no "
                   "checkpointing in peak memory and, compiled, against checkpointing every "
                   "block in tokens/s."},
    ),
    Method(
        id="eager", name="eager PyTorch", paper="1912.01703", role="baseline",
        how={"ko": "컴파일도 샤딩도 체크포인팅도 없는 단일 프로세스 eager 학습으로, 다른 레버의 "
                   "속도와 메모리와 손실을 모두 이것에 견줍니다.",
             "en": "Single-process eager training, with no compiling, sharding or "
                   "checkpointing: the run every other lever's speed, memory and loss is set "
                   "against."},
    ),
)
REFERENCE = "eager"

FINAL_LOSS: Text = {"ko": "최종 검증 손실 (bf16 손실 동등성 실행)",
                    "en": "final validation loss (bf16 loss-parity runs)"}
SHIFT: Text = {"ko": "eager 대비 최종 손실의 이동, 시드 사이 eager 손실의 표준편차 단위",
               "en": "shift of the final loss from eager's, in sds over seeds of eager's"}
# timings: what the clock and the memory counter read, which differ from run to run
TOKENS_PER_S: Text = {"ko": "초당 학습 토큰 수 (시간 측정값)",
                      "en": "training tokens per second (timed)"}
MEMORY: Text = {"ko": "최대 학습 메모리, MB (시간 측정과 함께 잰 값)",
                "en": "peak training memory, MB (measured with the timings)"}
BLOCKS: dict[float, Text] = {
    SELECTIVE: {"ko": "블록을 하나 걸러 체크포인팅", "en": "every second block checkpointed"},
    FULL: {"ko": "모든 블록을 체크포인팅", "en": "every block checkpointed"},
}


def _checkpointed(fraction: float, compiled: bool) -> Text:
    lever = {"ko": "컴파일", "en": "compiled"} if compiled else {"ko": "eager", "en": "eager"}
    return {lang: f"{BLOCKS[fraction][lang]}, {lever[lang]}" for lang in lever}


def _over_rounds(quantity: Text, values: list[float | None], setting: Text | None = None,
                 better: Literal["lower", "higher"] | None = None) -> list[Row]:
    """A row of the mean over the rounds that measured it; none where no round did."""
    measured = [v for v in values if v is not None]
    return [mean_row(quantity, measured, "rounds", setting, better=better)] if measured else []


def timed_rows(timing: Mapping[str, Any]) -> dict[str, list[Row]]:
    """Each lever's speed in tokens/s over the timed rounds (eager, compiled, and compiled with
    every second and every block checkpointed: the speed claims' numbers) and its peak training
    memory by round at each checkpointed fraction (the memory claim's): on a CPU measured in
    eager memory runs, so the memory without checkpointing is eager's, on a GPU in the compiled
    timed runs, so it is torch.compile's."""
    runs = {c["name"]: c for c in timing["configurations"]}

    def speed(name: str, setting: Text | None = None) -> list[Row]:
        return _over_rounds(TOKENS_PER_S, runs[name]["tokens_per_s_runs"] if name in runs else [],
                            setting, "higher")

    memory = timing.get("training_memory_mb") or {}

    def peak(fraction: float, setting: Text | None = None) -> list[Row]:
        return _over_rounds(MEMORY, memory.get(f"{fraction:g}") or [], setting, "lower")

    selective = runs.get(checkpoint_name(SELECTIVE, True), {})
    compiled = selective.get("training_memory_mb") is not None  # memory of the compiled runs
    out = {"eager": speed("eager") + ([] if compiled else peak(0.0)),
           "torch-compile": speed("compile") + (peak(0.0) if compiled else []),
           "activation-checkpointing": [
               *(row for f in (SELECTIVE, FULL) for row in peak(f, _checkpointed(f, compiled))),
               *(row for f in (SELECTIVE, FULL)
                 for row in speed(checkpoint_name(f, True), _checkpointed(f, True)))]}
    return {method: found for method, found in out.items() if found}


def rows(result: Mapping[str, Any]) -> dict[str, list[Row]]:
    """Each lever's final loss over the parity seeds and, for compile and FSDP, its per-seed
    shift from eager's; FSDP at the most processes that ran, and none where only one did. Then
    each lever's timed speed and memory (`timed_rows`)."""
    parity = result["metrics"]["parity"]
    losses, shifts = parity["final_loss"], parity["shifts"]
    out: dict[str, list[Row]] = {
        "eager": [mean_row(FINAL_LOSS, losses["eager"], "training seeds", better="lower")],
        "torch-compile": [
            mean_row(FINAL_LOSS, losses["compile"], "training seeds", better="lower"),
            mean_row(SHIFT, shifts["compile"], "training seeds")],
    }
    # with no FSDP run (one GPU) the world is 1 and the fsdp shift is eager's against itself
    sharded = f"FSDP x{shifts['world']}"
    if shifts["world"] > 1 and sharded in losses:
        on = {"ko": f"프로세스 {shifts['world']}개", "en": f"{shifts['world']} processes"}
        out["fsdp"] = [
            mean_row(FINAL_LOSS, losses[sharded], "training seeds", on, better="lower"),
            mean_row(SHIFT, shifts["fsdp"], "training seeds", on)]
    for method, timed in timed_rows(result["timing"]).items():
        out[method] = out.get(method, []) + timed
    return out
