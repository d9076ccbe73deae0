"""SirLLM (Yao et al. 2024, arXiv 2405.12528) against StreamingLLM (Xiao et al. 2023): what a
streaming model remembers when its KV cache keeps the highest-entropy tokens, not the latest.

The spec: params, scales and budgets. `base_lm.py` trains the dialogue model; `run.py` streams
dialogues through it under each cache policy and decides the claims.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from digestlab.configs import GPTConfig, TrainConfig
from digestlab.experiments import LanguageModelParams

BASES = ("lm",)
# A model has an attention sink when some head gives the first token at least twice the
# attention a uniform head would; StreamingLLM's claim is about such models.
SINK_RATIO = 2.0


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


class Params(BaseModel):
    """Everything the SirLLM experiment takes."""

    model_config = ConfigDict(extra="forbid")

    lm: LanguageModel
    budgets: list[int] = Field(min_length=1)  # cache sizes compared, in tokens per sequence
    budget: int = Field(gt=0)  # the budget the claims are decided at; one of `budgets`
    sinks: int = Field(4, ge=1)  # first tokens every sink-keeping policy holds
    # SirLLM's decay ratios for the claims: the authors' released settings for these tasks
    grocery_decay: float = Field(1.0, gt=0, le=1)
    rps_decay: float = Field(0.9, gt=0, le=1)
    decays: list[float] = Field(min_length=1)  # decay ratios swept besides, at `budget`
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

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.budget not in self.budgets:
            raise ValueError(f"budget {self.budget} must be one of budgets {self.budgets}")
        if any(b <= self.sinks for b in [*self.budgets, self.ppl_window]):
            raise ValueError(f"every budget and ppl_window must exceed sinks ({self.sinks})")
        if max(*self.budgets, self.ppl_window) >= self.lm.model.block_size // 2:
            raise ValueError("budgets and ppl_window must stay below half of "
                             f"lm.model.block_size ({self.lm.model.block_size}), which also "
                             "holds the turn being read")
        if self.rps_scored_from >= self.rps_rounds:
            raise ValueError("rps_scored_from must be below rps_rounds")
        return self


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


SCALES = {
    "smoke": Params(
        lm=_lm(d_model=32, n_layer=2, steps=20, batch_size=8, n_dialogues=200, chat_steps=8),
        budgets=[16, 32], budget=32, decays=[1.0, 0.9],
        grocery_streams=4, grocery_exchanges=20, rps_streams=4, rps_rounds=20,
        rps_scored_from=8, ppl_streams=2, ppl_tokens=256, ppl_window=32,
    ),
    # About 4 minutes of training on 2 cores (2.4M tokens of pretraining, 3.3M of fine-tuning
    # mostly on the bot's turns), then the streams, one per core.
    "cpu": Params(
        lm=_lm(d_model=128, n_layer=2, steps=1200, batch_size=8, n_dialogues=20000,
               chat_steps=800),
        budgets=[32, 64, 96], budget=64, decays=[1.0, 0.99, 0.95, 0.9],
        grocery_streams=120, grocery_exchanges=60, rps_streams=200, rps_rounds=100,
        rps_scored_from=30, ppl_streams=4, ppl_tokens=4096, ppl_window=64,
    ),
    # Not yet run on a GPU: sized by the CPU's costs, streams being latency-bound there too.
    "gpu": Params(
        lm=_lm(d_model=256, n_layer=4, steps=3000, batch_size=32, n_dialogues=100000,
               chat_steps=800, compile=True),
        budgets=[32, 64, 96], budget=64, decays=[1.0, 0.99, 0.95, 0.9],
        grocery_streams=300, grocery_exchanges=60, rps_streams=150, rps_rounds=100,
        rps_scored_from=30, ppl_streams=16, ppl_tokens=8192, ppl_window=64,
    ),
}
