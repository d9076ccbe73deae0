"""The round-2 methods this experiment measures that come from papers: SPO, the reproduced
paper's own, and the baselines it claims to beat: DPO run round after round, DPO on both
rounds' pairs at once (both DPO's loss, two baselines here as in the claims) and the Safe-RLHF
Lagrangian. The oracle-margin SPO is a control of ours, left out.

The headline is the claims' own comparison: helpfulness at the harmlessness SPO reaches, seed by
seed, on each baseline's trade-off frontier (the best it does there over its settings). A
baseline's raw scores at one setting do not compare with SPO's: each setting lands elsewhere on
the harmlessness axis."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from digestlab.claims import Text
from digestlab.experiments.spo import LAGRANGIAN, MIXED, SEQUENTIAL, spo_name
from digestlab.methods import Method, Row, mean_row

SPO, SEQUENTIAL_DPO, DPO_ON_BOTH, SAFE_RLHF = "spo", "sequential-dpo", "dpo-on-both", "lagrangian"
DPO_PAPER = "2305.18290"

METHODS = (
    Method(
        id=SPO, name="SPO", paper="2405.12739", role="proposed",
        how={"ko": "2라운드에서 1라운드 정책을 무해함 쌍으로 학습하면서 1라운드 암묵적 보상의 "
                   "α배를 마진으로 더하고, 기준선들과 같은 쌍을 같은 순서로 학습한 뒤, 학습에 "
                   "쓰지 않은 요청에 대한 답이 도움이 되는지와 무해한지를 채점합니다.",
             "en": "Round 2 trains the round-1 policy on harmlessness pairs with α times the "
                   "round-1 implicit reward as a margin, on the same pairs in the same order as "
                   "the baselines, and scores its replies to held-out requests for helpfulness "
                   "and harmlessness."},
        claims=("spo-beats-the-baselines", "spo-gains-dimension-2"),
    ),
    Method(
        id=SEQUENTIAL_DPO, name="Sequential DPO", paper=DPO_PAPER, role="baseline",
        how={"ko": "2라운드에서 1라운드 정책에 무해함 쌍으로 DPO를 그대로 돌리고, 여러 길이에서 "
                   "멈춘 정책들이 그리는 절충 곡선을 SPO와 같은 무해함에서 SPO와 비교합니다.",
             "en": "Round 2 runs plain DPO on the harmlessness pairs from the round-1 policy, and "
                   "the trade-off curve its runs stopped at several lengths trace is set against "
                   "SPO at SPO's harmlessness."},
    ),
    Method(
        id=DPO_ON_BOTH, name="DPO on both", paper=DPO_PAPER, role="baseline",
        how={"ko": "2라운드에서 두 라운드의 쌍을 섞어 DPO로 학습하되 배치 속 1라운드 쌍의 몫을 "
                   "여러 값으로 바꿔 가며 절충 곡선을 그리고, 그 곡선을 SPO와 같은 무해함에서 "
                   "SPO와 비교합니다.",
             "en": "Round 2 runs DPO on both rounds' pairs at once, at several shares of round-1 "
                   "pairs per batch, and the trade-off curve they trace is set against SPO at "
                   "SPO's harmlessness."},
    ),
    Method(
        id=SAFE_RLHF, name="Safe RLHF (Lagrangian)", paper="2310.12773", role="baseline",
        how={"ko": "2라운드에서 무해함 쌍으로 DPO를 돌리며 라그랑주 승수로 1라운드 선호 손실을 "
                   "여러 문턱 아래에 묶어 두고(Safe RLHF가 비용 제약을 지키는 방식), 그 절충 "
                   "곡선을 SPO와 같은 무해함에서 SPO와 비교합니다.",
             "en": "Round 2 runs DPO on the harmlessness pairs while a Lagrange multiplier holds "
                   "round 1's preference loss under several thresholds, as Safe RLHF holds its "
                   "cost constraint, and the trade-off curve they trace is set against SPO at "
                   "SPO's harmlessness."},
    ),
)
# SPO is sequential DPO with the previous round's reward added (α = 0 is sequential DPO), and
# its second claim is stated against it
REFERENCE = SEQUENTIAL_DPO

AT_SPO = {"ko": "SPO와 같은 무해함에서 도움이 되는 답의 비율",
          "en": "helpful replies at SPO's harmlessness"}
HELPFUL = {"ko": "도움이 되는 답의 비율", "en": "helpful replies"}
HARMLESS = {"ko": "무해한 답의 비율", "en": "harmless replies"}
GAIN = {"ko": "2라운드에서 늘어난 무해한 답의 비율", "en": "harmless replies gained in round 2"}
UNIT = "fine-tuned policies"  # one per seed, as the claims replicate them
SPO_PREFIX = spo_name(1).removesuffix("1")  # "SPO α="


def _alpha(alpha: str, claimed: bool) -> Text:
    return ({"ko": f"α={alpha}, 주장을 판정한 값", "en": f"α={alpha}, the claims'"} if claimed
            else {"ko": f"α={alpha}", "en": f"α={alpha}"})


def _settings(name: str, values: list[Any]) -> list[Text]:
    """Each setting of a baseline's family, in words."""
    if name == SEQUENTIAL:  # stopped early, then the whole round
        return [{"ko": f"2라운드 {s}/{values[-1]} 스텝", "en": f"{s} of {values[-1]} round-2 steps"}
                for s in values[:-1]] + [{"ko": f"2라운드 전체({values[-1]} 스텝)",
                                          "en": f"the whole of round 2 ({values[-1]} steps)"}]
    if name == MIXED:
        return [{"ko": f"배치의 {s:.0%}가 1라운드 쌍", "en": f"{s:.0%} of each batch round-1 pairs"}
                for s in values]
    return [{"ko": f"문턱: 1라운드 손실의 {s:g}배", "en": f"threshold {s:g} × round 1's loss"}
            for s in values]


def _scores(stats: Mapping[str, Any], setting: Text) -> list[Row]:
    """Helpfulness and harmlessness over the seeds, from per-seed scores."""
    return [mean_row(quantity, stats[key]["per_seed"], UNIT, setting=setting, better="higher")
            for quantity, key in ((HELPFUL, "helpful"), (HARMLESS, "harmless"))]


def rows(result: Mapping[str, Any]) -> dict[str, list[Row]]:
    """Each method's helpfulness at SPO's harmlessness (SPO at the claims' α, the params'
    `alpha`) first, then the harmlessness it gained in round 2 where the claims measure it, then
    its raw scores at each setting."""
    metrics = result["metrics"]
    methods, baselines = metrics["methods"], metrics["baselines"]
    gains = metrics["harmlessness_gain"]
    claimed = spo_name(result["params"]["alpha"])  # SPO at the claims' α
    alpha = claimed.removeprefix(SPO_PREFIX)
    spo = methods[claimed]
    helpful = spo["helpful"]["per_seed"]
    out = {SPO: [mean_row(AT_SPO, helpful, UNIT, setting=_alpha(alpha, True), better="higher"),
                 mean_row(GAIN, gains[claimed]["per_seed"], UNIT, setting=_alpha(alpha, True),
                          better="higher")]}
    alphas = sorted((name.removeprefix(SPO_PREFIX) for name in methods
                     if name.startswith(SPO_PREFIX)), key=float)
    for a in alphas:
        out[SPO] += _scores(methods[SPO_PREFIX + a], _alpha(a, a == alpha))

    at = {"ko": f"설정들이 그리는 절충 곡선 위, 시드마다 SPO α={alpha}에 맞춤",
          "en": f"on its settings' frontier, matched to SPO α={alpha} seed by seed"}
    for method, name in ((SEQUENTIAL_DPO, SEQUENTIAL), (DPO_ON_BOTH, MIXED),
                         (SAFE_RLHF, LAGRANGIAN)):
        if name not in baselines:
            continue
        # the frontier's helpfulness at SPO's harmlessness is SPO's helpfulness less how far
        # SPO lies above it (run.py's `curve_at`; a family's frontier holds the round-1 policy,
        # and for DPO on both and the Lagrangian also sequential DPO's whole round, their limit)
        above = spo["above"][name]["per_seed"]
        settings = _settings(name, [row["setting"] for row in baselines[name]])
        found = [mean_row(AT_SPO, [h - a for h, a in zip(helpful, above, strict=True)], UNIT,
                          setting=at, better="higher")]
        if name in gains:  # sequential DPO's whole round, as claim 2 measures it
            found.append(mean_row(GAIN, gains[name]["per_seed"], UNIT, setting=settings[-1],
                                  better="higher"))
        for row, setting in zip(baselines[name], settings, strict=True):
            found += _scores(row, setting)
        out[method] = found
    return out
