"""The cache policies this experiment measures that come from papers: SirLLM, the reproduced
paper's own, and StreamingLLM, the baseline it is set against and whose own claim (sink tokens
keep perplexity near recomputation) is decided here too. The window, random and oracle caches
are controls of ours: the window serves StreamingLLM's claim as its ablation, the rest are left
out. Every row comes from the model the claims are decided on, at the claims' cache size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from digestlab.claims import Text
from digestlab.experiments.sirllm import REFERENCE as AUTHORS_SCORING
from digestlab.methods import Method, Row, mean_row, rate_row

SIRLLM, STREAMING = "sirllm", "streamingllm"

METHODS = (
    Method(
        id=SIRLLM, name="SirLLM", paper="2405.12528", role="proposed",
        how={"ko": "희소 캐시용으로 미세조정한 모델이 첫 토큰들과 토큰 엔트로피가 가장 높은 "
                   "토큰들을 남기는 캐시로 장보기 대화와 가위바위보 게임을 읽고, 물건을 맞게 "
                   "기억한 대화와 이긴 판의 비율을 잽니다.",
             "en": "The model fine-tuned for a sparse cache reads grocery dialogues and "
                   "rock-paper-scissors games through a cache that keeps the first tokens and "
                   "those of highest token entropy, and we count the items it recalls and the "
                   "rounds it wins."},
        claims=("sirllm-recalls-grocery", "sirllm-wins-rps"),
    ),
    Method(
        id=STREAMING, name="StreamingLLM", paper="2309.17453", role="baseline",
        how={"ko": "같은 모델이 첫(sink) 토큰들과 최근 토큰들만 남기는 캐시로 같은 대화와 게임, "
                   "긴 대화 스트림을 읽고, 그 perplexity를 창마다 새로 계산한 값과 비교합니다.",
             "en": "The same model reads the same dialogues, games and long dialogue streams "
                   "through a cache that keeps the first (sink) tokens and the latest, and its "
                   "perplexity is set against recomputing each window afresh."},
        claims=("sinks-keep-perplexity",),
    ),
)
REFERENCE = STREAMING

RECALL = {"ko": "장보기 물건 회상 정답률", "en": "grocery item recall"}
HELD = {"ko": "질문할 때 물건이 캐시에 남아 있던 비율",
        "en": "item still in the cache at the question"}
WIN = {"ko": "가위바위보 승률", "en": "rock-paper-scissors win rate"}
PPL = {"ko": "스트리밍 perplexity, 스트림 평균", "en": "streaming perplexity, mean over streams"}
PPL_RATIO = {"ko": "perplexity / 재계산 perplexity, 스트림의 기하평균",
             "en": "perplexity / recomputed perplexity, geometric mean over streams"}


def _cache(size: str, *more: Text) -> Text:
    """A setting: the cache size, then more."""
    out: Text = {"ko": f"캐시 {size} 토큰", "en": f"{size}-token cache"}
    for extra in more:
        out = {lang: f"{out[lang]}, {extra[lang]}" for lang in out}
    return out


# token i scored by token i - 1's surprisal, as the authors' code scores
AUTHORS = {"ko": "저자 코드의 점수 매기기", "en": "the authors' code's scoring"}
WINDOW_ALONE = {"ko": "sink 토큰 없이 최근 토큰만", "en": "the latest tokens alone, no sinks"}


def _policy_rows(name: str, grocery: Mapping[str, Any], wins: Mapping[str, list[float]],
                 size: str, *more: Text) -> list[Row]:
    """A policy's grocery recall and win rate at the claims' cache size, under `more`."""
    rows = []
    correct = grocery["correct_at_cache_size"].get(name)
    if correct:
        rows.append(rate_row(RECALL, sum(correct), len(correct), "streams",
                             setting=_cache(size, *more)))
    if wins.get(name):
        rows.append(mean_row(WIN, wins[name], "games", setting=_cache(size, *more),
                             better="higher"))
    return rows


def _grocery_rows(name: str, grocery: Mapping[str, Any], size: str) -> list[Row]:
    """How often the policy still held the item at the claims' cache size, and its recall at
    the other cache sizes (counts out of the streams, from the shares the result holds)."""
    n = grocery["streams"]
    cells = grocery["by_cache_size"]
    rows = []
    if name in cells[size]:
        rows.append(rate_row(HELD, round(cells[size][name]["retained"] * n), n, "streams",
                             setting=_cache(size)))
        rows += [rate_row(RECALL, round(cells[other][name]["accuracy"] * n), n, "streams",
                          setting=_cache(other))
                 for other in cells if other != size and name in cells[other]]
    return rows


def rows(result: Mapping[str, Any]) -> dict[str, list[Row]]:
    """SirLLM's and StreamingLLM's rows on the claims' model, grocery recall at the claims'
    cache size (the params' `cache_size`) first: the two claims' quantities SirLLM is set
    against StreamingLLM on."""
    metrics = result["metrics"]
    claimed = metrics["by_model"][metrics["claims_model"]]
    grocery, wins = claimed["grocery"], claimed["rps"]["win_per_game"]
    perplexity = claimed["perplexity"]
    size = str(result["params"]["cache_size"])  # by_cache_size's keys: JSON's strings
    out: dict[str, list[Row]] = {}

    sirllm = _policy_rows("SirLLM", grocery, wins, size)
    if sirllm:
        # the authors' scoring decides the claims beside SirLLM's own: a setting of the method
        sirllm += _policy_rows(AUTHORS_SCORING, grocery, wins, size, AUTHORS)
        out[SIRLLM] = sirllm + _grocery_rows("SirLLM", grocery, size)

    streaming = _policy_rows("StreamingLLM", grocery, wins, size)
    per_stream = perplexity["per_stream"]
    if "StreamingLLM" in per_stream:
        # its own claim: perplexity against recomputing each window, per stream, with the
        # window alone as the ablation the claim says degrades; averaged on their logs, as the
        # claim (decided in log space) averages them
        window = str(perplexity["window"])
        recompute = per_stream["recompute"]
        for name, more in (("StreamingLLM", ()), ("window", (WINDOW_ALONE,))):
            ratios = [p / r for p, r in zip(per_stream[name], recompute, strict=True)]
            streaming.append(mean_row(PPL_RATIO, ratios, "streams",
                                      setting=_cache(window, *more), better="lower", log=True))
        streaming.append(mean_row(PPL, per_stream["StreamingLLM"], "streams",
                                  setting=_cache(window), better="lower"))
    if streaming:
        out[STREAMING] = streaming + _grocery_rows("StreamingLLM", grocery, size)
    return out
