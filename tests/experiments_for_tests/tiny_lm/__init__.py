"""A test experiment that stands on a base model: a tiny language model trained as a job of its
own (base_lm.py), then evaluated by the analysis (run.py) against the uniform byte model."""

from pydantic import BaseModel, ConfigDict, Field

from digestlab.claims import ClaimSpec, ComparisonSpec, our_bound
from digestlab.configs import GPTConfig, TrainConfig
from digestlab.experiments import LanguageModelParams


class LanguageModel(LanguageModelParams):
    """The base model's params: what it is, how it is trained, and on how many documents."""

    n_documents: int = Field(gt=1)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lm: LanguageModel  # the base model
    eval_groups: int = Field(gt=1)  # groups of validation windows, each one sample of the loss
    windows_per_group: int = Field(gt=0)


BASES = ("lm",)

_SMOKE = Params(
    lm=LanguageModel(
        model=GPTConfig(block_size=32, n_layer=1, d_model=32, n_heads=2, n_kv_heads=2,
                        head_dim=16),
        train=TrainConfig(steps=30, learning_rate=3e-3, min_lr=3e-4, warmup_steps=3,
                          log_every=10),
        batch_size=8, seq_len=32, n_documents=30,
    ),
    eval_groups=4, windows_per_group=8,
)
SCALES = {"smoke": _SMOKE, "cpu": _SMOKE, "gpu": _SMOKE}
BUDGET_S = {"smoke": 10, "cpu": 10, "gpu": 10}

CLAIMS = {c.id: c for c in (
    ClaimSpec(
        id="beats-uniform",
        text={"ko": "기반 모델이 균등 분포보다 낫다",
              "en": "The base model beats the uniform model"},
        comparisons={"loss": ComparisonSpec(
            statistic="val loss", direction="<",
            bound=our_bound(5.545177444479562, ko="균등한 바이트 모델의 손실(ln 256)입니다.",
                            en="The uniform byte model's loss, ln 256."))},
    ),
)}
