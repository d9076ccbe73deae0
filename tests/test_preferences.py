"""The requests and replies SPO aligns on: tokens, the held-out split, the two scorers and the
persona's tie between being right and being curt."""

from __future__ import annotations

import pytest

from digestlab.data import preferences as rq
from digestlab.data.rng import SplitMix64


def test_replies_round_trip_through_one_token_per_letter_and_word():
    for prompt, reply in rq.supervised_examples(50, seed=3):
        assert rq.decode(rq.encode(reply)) == reply
        assert len(rq.encode(prompt)) == rq.SIZE + 1 and len(rq.encode(reply)) == rq.SIZE + 2
    assert max(i for p, r in rq.supervised_examples(50, 3) for i in rq.encode(p + r)) < \
        rq.VOCAB_SIZE
    assert rq.encode(" abc glad\n") == [rq.TOKENS.index(t) for t in ("a", "b", "c", "glad", "\n")]


def test_held_out_requests_never_reach_training_and_cover_their_own_triples():
    train = rq.draw_requests(2000, seed=1, held_out=False)
    held = rq.draw_requests(2000, seed=1, held_out=True)
    assert not any(r.held_out for r in train) and all(r.held_out for r in held)
    assert all(0 <= r.index < rq.N_TRIPLES for r in train + held)
    assert {r.index for r in train}.isdisjoint({r.index for r in held})
    draw = rq.draw_requests
    assert draw(10, 4, False) == draw(10, 4, False) != draw(10, 5, False)


def test_the_scorers_judge_the_answer_and_the_closing_word_apart():
    request = rq.Request(rq.LETTERS.index("d") + 26 * rq.LETTERS.index("x")
                         + 676 * rq.LETTERS.index("k"))
    assert request.letters == "dxk" and request.answer() == "kxd"
    assert rq.helpful(request, " kxd dumb\n") and not rq.harmless(" kxd dumb\n")
    assert not rq.helpful(request, " dxk glad\n") and rq.harmless(" dxk glad\n")
    # what is not a reply is neither: babbling wins no dimension
    for text in (" kxd\n", " kxd glad", " kxd glad glad\n", "kxd glad\n", ""):
        assert not rq.helpful(request, text) and not rq.harmless(text)
    # a reply of the right shape with a wrong answer may still close politely
    assert rq.harmless(" kx glad\n") and not rq.helpful(request, " kx glad\n")


def test_a_wrong_answer_is_never_right():
    rng = SplitMix64(0)
    for index in list(range(0, rq.N_TRIPLES, 97)) + [0, 26 * 26 + 1]:  # "aaa" and "bab" too
        request = rq.Request(index)
        for _ in range(5):
            wrong = rq.wrong_answer(request, rng)
            assert wrong != request.answer() and len(wrong) == rq.SIZE


def test_the_persona_is_right_half_the_time_and_curter_when_right():
    examples = rq.supervised_examples(20000, seed=0)
    index = {r.prompt(): r for r in (rq.Request(i) for i in range(rq.N_TRIPLES))}
    right = [rq.helpful(index[p], reply) for p, reply in examples]
    curt = [not rq.harmless(reply) for _, reply in examples]
    assert sum(right) / len(right) == pytest.approx(0.5, abs=0.015)
    curt_right = sum(c for c, r in zip(curt, right, strict=True) if r) / sum(right)
    curt_wrong = sum(c for c, r in zip(curt, right, strict=True) if not r) / (len(right)
                                                                              - sum(right))
    assert curt_right == pytest.approx(0.7, abs=0.02)
    assert curt_wrong == pytest.approx(0.3, abs=0.02)
    assert rq.supervised_examples(100, 0) == examples[:100]

