"""The attention designs the CLA experiment trains, each credited to the paper it comes from.

Every design is a row of one method: MQA and MQA with heads of half the dim are Shazeer's MQA,
the three CLA designs Brandon et al.'s. A design the scale does not train (GQA-4 and MLA at the
cpu scale) has no rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from digestlab.claims import Text
from digestlab.methods import Method, Row, mean_row

METHODS = (
    Method(
        id="cla", name="CLA", paper="2405.12981", role="proposed",
        how={"ko": "인접한 두 층이 K/V 하나를 함께 쓰는 MQA-CLA2를 MQA 및 KV 바이트가 같은 "
                   "설계들과 같은 배치와 시드로 학습해 비교하고, 세 층이 함께 쓰는 CLA3는 head를 "
                   "1.5배로 넓혀 CLA2와 KV 바이트를 맞춥니다.",
             "en": "MQA-CLA2, where each two adjacent layers share one K/V, trains on the same "
                   "batches and seeds as MQA and the designs of equal KV bytes, and CLA3, shared "
                   "by three layers, widens its heads 1.5 times to hold CLA2's KV bytes."},
        # each of the experiment's claims is the CLA paper's, about MQA-CLA2
        claims=("cla2-halves-kv", "cla2-matches-mqa", "cla2-keeps-most-of-mqa",
                "cla2-beats-smaller-heads", "cla2-beats-cla3"),
    ),
    Method(
        id="mqa", name="MQA", paper="1911.02150", role="baseline",
        how={"ko": "MQA는 같은 head_dim에서 CLA2와 비교하는 기준이고, head_dim을 절반으로 줄이고 "
                   "head 수를 두 배로 늘린 MQA는 토큰당 KV 바이트와 query 폭이 같은 조건에서 "
                   "CLA2와 비교하는 기준입니다.",
             "en": "MQA is the baseline CLA2 is compared against at the same head dim, and MQA "
                   "with heads of half the dim, twice as many, the one it is compared against "
                   "at equal KV bytes per token and equal query width."},
    ),
    Method(
        id="mha", name="MHA", paper="1706.03762", role="baseline",
        how={"ko": "query head마다 K/V head를 하나씩 두는 MHA를 다른 설계와 같은 배치로 학습해, "
                   "K/V를 나눠 쓰는 설계들이 줄여 나가는 KV 캐시의 출발점으로 놓습니다.",
             "en": "MHA, with a K/V head per query head, trains on the same batches as the "
                   "other designs as the KV cache the sharing designs cut down from."},
    ),
    Method(
        id="gqa", name="GQA", paper="2305.13245", role="baseline",
        how={"ko": "query head들이 무리 지어 K/V head 네 개를 나눠 쓰는 GQA-4를 다른 설계와 같은 "
                   "배치로 학습해, 메모리 축에서 MHA와 MQA 사이에 놓습니다.",
             "en": "GQA-4, whose query heads share four K/V heads in groups, trains on the same "
                   "batches as the other designs, between MHA and MQA on the memory axis."},
    ),
    Method(
        id="mla", name="MLA", paper="2405.04434", role="baseline",
        how={"ko": "K와 V를 저차원 latent 하나와 분리된 RoPE key로 캐시하는 MLA를 다른 설계와 "
                   "같은 배치로 학습해, KV 바이트와 perplexity 평면 위의 한 점으로 놓습니다.",
             "en": "MLA, which caches one low-rank latent of K and V and a decoupled RoPE key, "
                   "trains on the same batches as the other designs as one more point on the "
                   "plane of KV bytes against perplexity."},
    ),
)
REFERENCE = "mqa"

# Each method's designs, its headline design first, and what each design is.
DESIGNS_OF = {"cla": ("MQA-CLA2", "MQA-CLA3", "MQA-CLA3 3d/2"), "mqa": ("MQA", "MQA d/2"),
              "mha": ("MHA",), "gqa": ("GQA-4",), "mla": ("MLA",)}
_WHAT = {
    "MHA": ("query head마다 K/V head 하나씩", "a K/V head per query head"),
    "GQA-4": ("K/V head 네 개", "four K/V heads"),
    "MQA": ("K/V head 하나", "one K/V head"),
    "MQA d/2": ("K/V head 하나, 폭이 절반인 head를 두 배로", "one K/V head, twice as many heads "
                "of half the dim"),
    "MQA-CLA2": ("인접한 두 층이 K/V 하나를 공유", "each K/V shared by two adjacent layers"),
    "MQA-CLA3": ("인접한 세 층이 K/V 하나를 공유", "each K/V shared by three adjacent layers"),
    "MQA-CLA3 3d/2": ("세 층이 K/V 하나를 공유, head 폭 1.5배", "each K/V shared by three "
                      "layers, heads 1.5 times as wide"),
    "MLA": ("저차원 latent K/V와 분리된 RoPE key", "a low-rank latent K/V and a decoupled "
            "RoPE key"),
}

PERPLEXITY: Text = {"ko": "바이트 단위 검증 perplexity", "en": "validation perplexity per byte"}
KV_BYTES: Text = {"ko": "토큰당 KV 캐시 바이트", "en": "KV-cache bytes per token"}
PARAMETERS: Text = {"ko": "파라미터 수", "en": "parameters"}


def setting(design: str) -> Text:
    """A design as a row's setting: its name and what it is."""
    ko, en = _WHAT[design]
    return {"ko": f"{design}: {ko}", "en": f"{design}: {en}"}


def design_rows(design: str, measured: Mapping[str, Any]) -> list[Row]:
    """One design's perplexity over its seeds, then its KV bytes per token and parameters,
    which are the same on every seed (exact, so n=1 and no interval)."""
    at = setting(design)
    return [
        mean_row(PERPLEXITY, measured["val_ppl"], "training seeds", at, better="lower"),
        Row(quantity=KV_BYTES, setting=at, value=measured["kv_bytes_per_token"], n=1,
            unit="runs", better="lower"),
        Row(quantity=PARAMETERS, setting=at, value=measured["params"], n=1, unit="runs"),
    ]


def rows(result: Mapping[str, Any]) -> dict[str, list[Row]]:
    """Each method's rows, design by design, from a result (a metrics.json): its metrics hold
    every design it trained. A method's headline is the perplexity of its first design the
    result trained."""
    trained = result["metrics"]["designs"]
    return {method: [row for design in designs if design in trained
                     for row in design_rows(design, trained[design])]
            for method, designs in DESIGNS_OF.items()}
