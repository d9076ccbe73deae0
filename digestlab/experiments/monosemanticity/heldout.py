"""The held-out programs the SAEs are judged on, and what the program model makes of them.

Two splits of held-out program pairs (a buggy program and its clean twin, one line apart) keep
what is chosen apart from what is scored: the selection split (`selection_seed`) chooses, the
evaluation split (`eval_seed`) scores and steers. "The model predicts an error" means that,
reading greedily, it writes an error's name as the output line of the last print; P(error) is
the probability it gives an uppercase first byte (every error name starts with one, no clean
output does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from digestlab.claims import auroc
from digestlab.data import DOCUMENT_SEPARATOR
from digestlab.data import programs as program_data
from digestlab.data.programs import ERROR_FIRST_BYTES, ERROR_TYPES, Program
from digestlab.experiments.monosemanticity import ANY, Params
from digestlab.nn import GPT
from digestlab.nn.readout import Hook, greedy

MAX_OUTPUT = 18  # bytes read back per output line: the longest error name and its newline
NEWLINE = ord("\n")


def rows(items: Sequence[Program], with_output: bool = True) -> list[list[int]]:
    """Each program's bytes (its prompt alone without `with_output`) after the separator: every
    program reads as the start of a document, as in training."""
    return [[DOCUMENT_SEPARATOR, *(p.text() if with_output else p.prompt()).encode("utf-8")]
            for p in items]


@dataclasses.dataclass
class HeldOut:
    """A split of held-out programs: per error type, buggy programs and their clean twins."""

    buggy: list[Program]
    clean: list[Program]  # clean[i] is buggy[i]'s twin

    @property
    def all(self) -> list[Program]:
        return self.clean + self.buggy

    def labels(self) -> dict[str, np.ndarray]:
        """Boolean labels over `all` for "any bug" and for each error type against clean."""
        kinds = [None] * len(self.clean) + [p.error for p in self.buggy]
        out = {ANY: np.array([k is not None for k in kinds])}
        for error in ERROR_TYPES:
            out[error] = np.array([k == error for k in kinds])
        return out

    def of_type(self, error: str | None) -> np.ndarray:
        """Rows of `all` to score for one error type: its buggy programs and every clean one."""
        keep = [True] * len(self.clean) + [error is None or p.error == error for p in self.buggy]
        return np.array(keep)


def held_out(params: Params, seed: int) -> HeldOut:
    """`eval_pairs` pairs of each error type from the pair stream of `seed`: the selection split
    (`selection_seed`) or the evaluation split (`eval_seed`)."""
    buggy, clean = [], []
    for t, error in enumerate(ERROR_TYPES):
        for i in range(params.eval_pairs):
            twin, bug = program_data.pair(seed, t * 1_000_000 + i, error)
            clean.append(twin)
            buggy.append(bug)
    return HeldOut(buggy, clean)


def steering_sets(params: Params, data: HeldOut) -> tuple[list[Program], list[Program]]:
    """(clean, buggy) programs the steering runs read: the first of each type, interleaved."""
    n = len(ERROR_TYPES)
    per_type = max(1, params.steer_programs // n)
    picks = [t * params.eval_pairs + i for i in range(per_type) for t in range(n)]
    return [data.clean[i] for i in picks], [data.buggy[i] for i in picks]


def scores_by_bug(scores: np.ndarray, data: HeldOut) -> dict[str, np.ndarray]:
    """The AUROC of each column of scores (N, F) over `data.all`: for "any bug" against every
    clean twin, and for each error type against them."""
    return {name: auroc(scores[data.of_type(None if name == ANY else name)],
                        label[data.of_type(None if name == ANY else name)])
            for name, label in data.labels().items()}


@torch.no_grad()
def read_outputs(model: GPT, items: Sequence[Program], layer: int = 0, hook: Hook | None = None
                 ) -> dict:
    """For each program: the model's P(error) at the output's first byte, its greedy output
    line (at most MAX_OUTPUT bytes), whether that line is an error's name, and whether it is
    what the program prints once its bug is removed; `hook` steers block `layer`."""
    probs, continuations = greedy(model, rows(items, with_output=False), MAX_OUTPUT,
                                  pad=DOCUMENT_SEPARATOR, stop=NEWLINE, layer=layer, hook=hook)
    lines = [bytes(c).decode("utf-8", errors="replace") for c in continuations]
    # An error predicted is an error's name written: text that merely starts with a capital
    # (what a model pushed off its distribution writes) is no error message.
    return {"p_error": probs[:, list(ERROR_FIRST_BYTES)].sum(-1),
            "predicts_error": np.array([line in ERROR_TYPES for line in lines]),
            "bug_free": np.array([line == p.fixed_output for line, p in
                                  zip(lines, items, strict=True)]),
            "lines": lines}


def model_quality(model: GPT, data: HeldOut) -> dict:
    """How well the model itself predicts outputs and errors on a split's programs, and the
    AUROC of its own P(error) for each bug: the ceiling a feature of its stream is held to."""
    read = read_outputs(model, data.all)
    labels = data.labels()
    truth = [p.output for p in data.all]
    exact = np.array([a == b for a, b in zip(read["lines"], truth, strict=True)])
    is_buggy = labels[ANY]
    predicted = read["predicts_error"]
    return {
        "output_accuracy": {"clean": float(exact[~is_buggy].mean()),
                            "buggy": float(exact[is_buggy].mean())},
        "error_accuracy": float((predicted == is_buggy).mean()),
        "always_clean_accuracy": float((~is_buggy).mean()),
        "clean_predicted_error": float(predicted[~is_buggy].mean()),
        "auroc": {name: float(s) for name, s in
                  scores_by_bug(read["p_error"].numpy(), data).items()},
        "per_type": {error: {"predicted_error": float(predicted[labels[error]].mean()),
                             "exact": float(exact[labels[error]].mean()),
                             "programs": int(labels[error].sum())}
                     for error in ERROR_TYPES},
    }
