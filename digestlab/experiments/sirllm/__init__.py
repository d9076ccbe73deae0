"""SirLLM (Yao et al. 2024, arXiv 2405.12528) against StreamingLLM (Xiao et al. 2023): what a
streaming model remembers when its KV cache keeps the highest-entropy tokens, not the latest.

The spec: params, scales, budgets and claims. `base_lm.py` trains the dialogue model and
`base_robust.py` fine-tunes it to read from a sparse cache; `run.py` streams dialogues through
both under each cache policy and measures what the claims are decided on, on the second.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.claims import (
    LEVEL,
    ClaimSpec,
    ComparisonSpec,
    PremiseSpec,
    TheirNumber,
    our_bound,
    paper_bound,
)
from digestlab.configs import GPTConfig, TrainConfig
from digestlab.experiments import LanguageModelParams, Selection

BASES = ("lm", "robust")
STARTS_FROM = {"robust": "lm"}  # the cache-robust model is a fine-tune of the dialogue model
# Rows besides the plain policies, by the names the results and figures use: SirLLM scored as the
# authors' code scores (token i gets token i - 1's surprisal), and the grocery oracle, which keeps
# the request's turn and the latest tokens: the ceiling of a sparse cache.
REFERENCE, ORACLE = "SirLLM (reference scoring)", "oracle"


class LanguageModel(LanguageModelParams):
    """The dialogue model: trained once, then shared by every policy and task. Its words
    take the first ids of the model's 256-token vocabulary (see digestlab/data/dialogue.py).
    Its training context, seq_len, is far shorter than the streams it reads."""

    n_dialogues: int = Field(gt=1)  # training dialogues generated
    eval_batches: int = Field(8, gt=0)  # validation batches of batch_size rows
    mention_percent: int = Field(25, ge=0, le=100)  # chat turns that mention an item
    # Fine-tuning mostly on the bot's turns after pretraining, as a chat model is made (the
    # papers stream chat models); None skips it. The loss then falls on the replies, where
    # answering from earlier turns pays; the user's turns keep chat_user_weight of it, so the
    # model still predicts them and its token entropies stay meaningful there.
    chat: TrainConfig | None = None
    chat_batch_size: int = Field(16, gt=0)
    chat_user_weight: float = Field(0.05, ge=0, le=1)


class Robust(BaseModel):
    """Fine-tuning the dialogue model to read from a sparse cache: each row is a stretch of
    `span` stream tokens of which the last `tail` stay whole and the rest are cut down to a
    uniform draw of `keep` tokens, positions renumbered (`DialogueCorpus.sparse_rows`), the loss
    on the tail. The count kept is drawn per batch from `keep_range`, which spans the cache sizes:
    drops depend on no policy's choices, so no policy is trained for."""

    model_config = ConfigDict(extra="forbid")

    train: TrainConfig
    batch_size: int = Field(gt=0)
    span: int = Field(gt=0)  # stream tokens each row is cut from
    tail: int = Field(gt=1)  # the latest of them, kept whole and scored
    keep_range: tuple[int, int]  # fewest and most of the earlier tokens kept, inclusive
    user_weight: float = Field(1.0, ge=0, le=1)  # weight of the user's targets in the tail
    eval_batches: int = Field(4, gt=0)  # validation batches, their counts spread over the range

    @model_validator(mode="after")
    def _consistent(self) -> Robust:
        low, high = self.keep_range
        if not 0 <= low <= high <= self.span - self.tail:
            raise ValueError(f"keep_range must be ordered, within [0, span - tail = "
                             f"{self.span - self.tail}]")
        return self


class Params(BaseModel):
    """Everything the SirLLM experiment takes."""

    model_config = ConfigDict(extra="forbid")

    lm: LanguageModel
    robust: Robust  # the model the claims are decided on
    cache_sizes: list[int] = Field(min_length=1)  # cache sizes compared, in tokens per sequence
    cache_size: int = Field(gt=0)  # the one the claims are decided at
    sinks: int = Field(4, ge=1)  # first tokens every sink-keeping policy holds
    # SirLLM's decay ratios for the claims, applied once per request (a user's turn) as the
    # authors' code does: their released settings for these tasks
    grocery_decay: float = Field(1.0, gt=0, le=1)
    rps_decay: float = Field(0.9, gt=0, le=1)
    decays: list[float] = Field(min_length=1)  # decay ratios swept besides, at `cache_size`
    grocery_streams: int = Field(gt=1)  # grocery dialogues streamed per policy
    grocery_exchanges: int = Field(gt=0)  # chat exchanges between the request and the question
    rps_streams: int = Field(gt=1)  # rock-paper-scissors games streamed per policy
    rps_rounds: int = Field(gt=0)  # rounds per game
    rps_scored_from: int = Field(ge=0)  # rounds before this one are not scored (cache filling)
    favourite_percent: int = Field(60, gt=33, le=100)  # how often the opponent plays its move
    ppl_streams: int = Field(gt=0)  # streams of concatenated dialogues for perplexity
    ppl_tokens: int = Field(gt=0)  # tokens per perplexity stream
    ppl_window: int = Field(gt=0)  # cache size of the perplexity comparison
    recompute_every: int = Field(4, gt=0)  # score every n-th token (recomputing each is costly)
    eval_seed: int = 2  # seed of the evaluation streams (training used 0, validation 1)
    # seed of the streams the sparse fine-tune's recipe was chosen on (benchmarks/sirllm_robust.py)
    selection_seed: int = 7

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.cache_size not in self.cache_sizes:
            raise ValueError(f"cache_size {self.cache_size} must be one of cache_sizes "
                             f"{self.cache_sizes}")
        if any(b <= self.sinks for b in [*self.cache_sizes, self.ppl_window]):
            raise ValueError(f"every cache size and ppl_window must exceed sinks ({self.sinks})")
        if max(*self.cache_sizes, self.ppl_window) >= self.lm.model.block_size // 2:
            raise ValueError("cache_sizes and ppl_window must stay below half of "
                             f"lm.model.block_size ({self.lm.model.block_size}), which also "
                             "holds the turn being read")
        if self.lm.chat is None:
            raise ValueError("lm.chat: the cache-robust model fine-tunes the chat model, so the "
                             "dialogue model must be fine-tuned on the bot's turns first")
        if 1 + max(self.robust.keep_range) + self.robust.tail > self.lm.model.block_size:
            raise ValueError("robust: <bos>, the most tokens kept and the tail must fit in "
                             f"lm.model.block_size ({self.lm.model.block_size})")
        if self.rps_scored_from >= self.rps_rounds:
            raise ValueError("rps_scored_from must be below rps_rounds")
        return self


SELECTIONS = (Selection("the sparse fine-tune's recipe", "selection_seed", "eval_seed"),)

# Seconds each scale may take with `snakemake --cores 2` (cpu) or on one GPU (gpu), base model
# included; benchmarks/experiment_budget.py checks them.
BUDGET_S = {"smoke": 30, "cpu": 480, "gpu": 600}


def _lm(d_model: int, n_layer: int, steps: int, batch_size: int, n_dialogues: int,
        chat_steps: int, compile: bool = False) -> LanguageModel:
    heads = max(1, d_model // 32)
    return LanguageModel(
        model=GPTConfig(block_size=256, n_layer=n_layer, d_model=d_model, n_heads=heads,
                        n_kv_heads=heads, head_dim=d_model // heads),
        train=TrainConfig(steps=steps, learning_rate=3e-3, min_lr=3e-4,
                          warmup_steps=max(1, steps // 10), log_every=max(1, steps // 10),
                          eval_every=max(1, steps // 10), compile=compile),
        # a constant 1e-3 without weight decay
        chat=TrainConfig(steps=chat_steps, learning_rate=1e-3, min_lr=1e-3, warmup_steps=0,
                         weight_decay=0.0, log_every=max(1, chat_steps // 4),
                         eval_every=max(1, chat_steps // 10), compile=compile),
        batch_size=batch_size, seq_len=256, n_dialogues=n_dialogues,
    )


def _robust(steps: int, batch_size: int, span: int, tail: int, most: int,
            compile: bool = False) -> Robust:
    # the chat fine-tune's constant 1e-3 without weight decay; from nothing kept to `most`
    return Robust(
        train=TrainConfig(steps=steps, learning_rate=1e-3, min_lr=1e-3, warmup_steps=0,
                          weight_decay=0.0, log_every=max(1, steps // 4),
                          eval_every=max(1, steps // 10), compile=compile),
        batch_size=batch_size, span=span, tail=tail, keep_range=(0, most),
    )


SCALES = {
    "smoke": Params(
        lm=_lm(d_model=32, n_layer=2, steps=20, batch_size=8, n_dialogues=200, chat_steps=8),
        robust=_robust(steps=6, batch_size=8, span=128, tail=16, most=32),
        cache_sizes=[16, 32], cache_size=32, decays=[1.0, 0.9],
        grocery_streams=4, grocery_exchanges=20, rps_streams=4, rps_rounds=20,
        rps_scored_from=8, ppl_streams=2, ppl_tokens=256, ppl_window=32,
    ),
    # About 4 minutes of training on 2 cores (2.4M tokens of pretraining, 3.3M of fine-tuning
    # mostly on the bot's turns, 0.9M on sparse contexts), then both models' streams, one per
    # core.
    "cpu": Params(
        lm=_lm(d_model=128, n_layer=2, steps=1200, batch_size=8, n_dialogues=20000,
               chat_steps=800),
        # The recipe, on the selection streams (benchmarks/sirllm_robust.py, 60 grocery streams
        # per cache size, 40 games; span:steps:user weight:most kept). None kept the model's play
        # (StreamingLLM's win rate 0.508 as trained): 192:600:0.05:96 0.348, 192:600:1:96 0.457,
        # 192:1200:1:96 0.443, 512:1200:1:96 0.389, 192:600:1:144 0.467, 192:1200:1:144 0.339;
        # nor did any read a kept item apart from its turn much better than the model as trained
        # (0.175 of 40 streams): 0.119, 0.207, 0.143, 0.238 (the oracle at 0.792), 0.167, 0.207.
        # No recipe met the rule; this one is kept: it ties for the best read of those that kept
        # the oracle's recall, and of those it lost the least play. The rule itself was revised
        # once after a scored run (see the benchmark's docstring).
        robust=_robust(steps=600, batch_size=16, span=192, tail=48, most=96),
        cache_sizes=[32, 64, 96], cache_size=64, decays=[1.0, 0.99, 0.95, 0.9],
        grocery_streams=100, grocery_exchanges=60, rps_streams=160, rps_rounds=100,
        rps_scored_from=30, ppl_streams=4, ppl_tokens=2048, ppl_window=64,
    ),
    # Not yet run on a GPU: sized by the CPU's costs, streams being latency-bound there too.
    "gpu": Params(
        lm=_lm(d_model=256, n_layer=4, steps=3000, batch_size=32, n_dialogues=100000,
               chat_steps=800, compile=True),
        robust=_robust(steps=800, batch_size=32, span=192, tail=48, most=96, compile=True),
        cache_sizes=[32, 64, 96], cache_size=64, decays=[1.0, 0.99, 0.95, 0.9],
        grocery_streams=300, grocery_exchanges=60, rps_streams=150, rps_rounds=100,
        rps_scored_from=30, ppl_streams=16, ppl_tokens=8192, ppl_window=64,
    ),
}


# --- the claims, fixed before any run ---------------------------------------------------------

CHANCE = 0.25  # the grocery question offers four items
GROCERY_MARGIN = 0.20  # "far better": SirLLM's recall at least 20 points above StreamingLLM's
RANDOM_PLAY = 1 / 3  # rock-paper-scissors won at random
PLAY_MARGIN = 0.05  # a model that plays from its cache beats random play by more than this
PPL_NEAR = 1.10  # "near the recompute baseline": within 10% of its perplexity
# A model has an attention sink when some head gives the first token at least twice the
# attention a uniform head would; StreamingLLM's claim is about such models.
SINK_RATIO = 2.0

CLAIMS = {c.id: c for c in (
    ClaimSpec(
        id="sirllm-recalls-grocery",
        text={"ko": "캐시 크기가 같을 때({cache_size} 토큰), 물건이 최근 구간을 벗어난 뒤에도 "
                    "SirLLM은 장보기 물건을 StreamingLLM보다 훨씬 잘 기억한다",
              "en": "At an equal cache size ({cache_size} tokens), SirLLM recalls the grocery "
                    "item far better than StreamingLLM once it has left the recent window"},
        comparisons={name: ComparisonSpec(
            statistic=f"correct({row}) − correct(StreamingLLM)", direction=">",
            bound=our_bound(
                GROCERY_MARGIN,
                ko="논문은 '훨씬 잘'에 문턱을 두지 않고"
                   "(표 2의 차이는 6B–34B 모델에서 63–74점), 우연이 25%인 네 지선다에서 "
                   "우리는 정답률 20점 차이를 '훨씬'이라 부를 수 있는 가장 작은 차이로 읽었습니다.",
                en="The paper sets no margin for “far better” (its "
                   "Table 2 gains are 63–74 points on 6B–34B models); on a four-way question "
                   "where chance is 25%, 20 points of accuracy is the least gain we read as "
                   "far."))
            for name, row in (("recall gain", "SirLLM"),
                              ("recall gain, authors' scoring", REFERENCE))},
        premises={"recall from a sparse cache": PremiseSpec(
            text={"ko": "요청이 담긴 차례와 최근 토큰만 남긴 희소 캐시에서 장보기 질문에 답할 수 "
                        "있는 모델",
                  "en": "a model that answers the grocery question from a sparse cache that kept "
                        "the request's turn and the latest tokens"},
            statistic={"ko": f"오라클 캐시의 정답률, {LEVEL:.0%} Wilson 구간 상한",
                       "en": f"upper end of the {LEVEL:.0%} Wilson interval of the oracle "
                             "cache's accuracy"},
            direction=">",
            bound=our_bound(
                CHANCE + GROCERY_MARGIN,
                ko="물건을 요청한 차례를 캐시에 그대로 두어도 우연(25%)보다 20점 넘게 "
                   "맞히지 못하는 모델에서는, 무엇을 남길지 고르는 어떤 정책도 20점 차이를 낼 수 "
                   "없습니다.",
                en="A model that cannot beat chance (25%) by the claimed 20 points even when "
                   "the cache kept the turn that asked for the item leaves no choice of what "
                   "to keep room to gain them."))},
        theirs=TheirNumber(
            value=0.7354, where="§4.2.2, Table 2 (Yi-6B, 1,024-token cache)",
            note={"ko": "대화당 평균 1,224 토큰, SirLLM 99.27% 대 StreamLLM 25.73%; 네 모델에서 "
                        "63.31–73.54점",
                  "en": "dialogues of 1,224 tokens on average, SirLLM 99.27% against StreamLLM "
                        "25.73%; 63.31–73.54 points over four models"}),
    ),
    ClaimSpec(
        id="sirllm-wins-rps",
        text={"ko": "치우친 상대와의 가위바위보에서 SirLLM의 승률이 StreamingLLM보다 높다",
              "en": "Against a biased rock-paper-scissors opponent, SirLLM wins more often than "
                    "StreamingLLM"},
        comparisons={name: ComparisonSpec(
            statistic=f"win({row}) − win(StreamingLLM)", direction=">",
            bound=paper_bound(0.0, "§4.2.3, Table 3, for every model"))
            for name, row in (("win gain", "SirLLM"), ("win gain, authors' scoring", REFERENCE))},
        premises={"play from memory": PremiseSpec(
            text={"ko": "최근 수를 담은 캐시로 무작위보다 잘 두는 모델, 곧 캐시에 남은 것을 쓰는 "
                        "모델",
                  "en": "a model that plays better than at random from a cache holding the latest "
                        "moves: one that uses what its cache keeps"},
            statistic={"ko": "StreamingLLM 승률 평균의 단측 95% 상한",
                       "en": "upper one-sided 95% bound of StreamingLLM's mean win rate"},
            direction=">",
            bound=our_bound(
                RANDOM_PLAY + PLAY_MARGIN,
                ko="무작위로 두면 1/3을 이깁니다. 최근 수를 담은 캐시로도 이보다 5점 넘게 "
                   "이기지 못하는 모델은 캐시에 남은 수를 쓰지 않으므로, 무엇을 남길지 고르는 "
                   "정책이 승률을 움직일 수 없습니다(논문의 차이는 0.8–2.1점입니다).",
                en="Random play wins a third of the rounds. A model that does not beat that by 5 "
                   "points even from a cache holding the latest moves does not use the moves "
                   "its cache holds, so no choice of what to keep can move its win rate (the "
                   "paper's gains are 0.8–2.1 points)."))},
        theirs=TheirNumber(
            value=0.0118, where="§4.2.3, Table 3 (Yi-6B, decay 0.9, 2,000 rounds)",
            note={"ko": "평균 승률 37.33% 대 36.15%; 네 모델에서 0.82–2.09점",
                  "en": "average win rate 37.33% against 36.15%; 0.82–2.09 points over four "
                        "models"}),
    ),
    ClaimSpec(
        id="sinks-keep-perplexity",
        text={"ko": "StreamingLLM의 sink 토큰은 스트리밍 perplexity를 재계산 기준에 가깝게 지키고, "
                    "최근 구간만 남기면 나빠진다",
              "en": "StreamingLLM's sink tokens keep streaming perplexity near the recompute "
                    "baseline, while a window alone degrades"},
        comparisons={
            "StreamingLLM near recompute": ComparisonSpec(
                statistic="ppl(StreamingLLM) / ppl(recompute)", direction="<", space="log",
                bound=our_bound(
                    PPL_NEAR,
                    ko="StreamingLLM 논문에서는 재계산과 1%도 "
                       "차이 나지 않지만(그림 1), 몇 개 스트림을 읽는 작은 모델에는 10%를 "
                       "'가깝다'의 한계로 두었습니다.",
                    en="StreamingLLM lands within 1% of "
                       "recomputation (its Figure 1); for a small model read on a few streams "
                       "we take 10% as the edge of “near”.")),
            "window degrades": ComparisonSpec(
                statistic="ppl(window) / ppl(recompute)", direction=">", space="log",
                bound=our_bound(
                    PPL_NEAR,
                    ko="'나빠진다'는 '가깝다'의 한계를 넘어서는 것이어야 하므로 같은 10%를 "
                       "썼습니다(논문에서는 창만 남기면 천 배쯤 나빠집니다).",
                    en="To degrade, the window must leave the same "
                       "10% band that “near” allows (in the paper it is about a thousand times "
                       "worse).")),
        },
        premises={"attention sink": PremiseSpec(
            text={"ko": "StreamingLLM의 주장이 전제하는, 학습된 모델의 attention sink",
                  "en": "an attention sink in the trained model, which StreamingLLM's claim is "
                        "about"},
            statistic={"ko": "층마다 가장 많이 주는 헤드의 첫 토큰 attention 중 최댓값 / 균등한 "
                             "헤드의 몫",
                       "en": "max over layers of the top head's attention on the first token "
                             "/ a uniform head's"},
            direction=">=",
            bound=our_bound(
                SINK_RATIO,
                ko="StreamingLLM은 문턱을 두지 않습니다. 첫 토큰에 "
                   "균등한 head의 두 배도 주지 않는 head를 sink라 부를 수는 없다고 보았습니다.",
                en="StreamingLLM names no threshold; a head that "
                   "gives the first token less than twice a uniform head's share is no sink."))},
        theirs=TheirNumber(
            value=0.9945, where="StreamingLLM (Xiao et al. 2023), Figure 1",
            note={"ko": "Llama-2-13B, PG19 65K 토큰: StreamingLLM 5.40 대 재계산 5.43; 창만 "
                        "남기면 5158",
                  "en": "Llama-2-13B on 65K tokens of PG19: StreamingLLM 5.40 against 5.43 "
                        "recomputed; the window alone 5158"}),
    ),
)}
