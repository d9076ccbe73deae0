"""The corpus is the same bytes everywhere, split by document, and batched deterministically."""

from __future__ import annotations

import ast

import pytest
import torch

from digestlab.data import (
    DOCUMENT_SEPARATOR,
    build_corpus,
    build_splits,
    corpus_sha256,
    decode,
    encode,
    get_batch,
    python_code,
    split_documents,
    tokens_from_documents,
    torch_source,
    validation_windows,
)
from digestlab.data.rng import SplitMix64

# Changing anything in how documents are generated changes this; update it only on purpose,
# since every recorded metrics.json names the corpus by its hash.
PINNED_SHA256_20_DOCS_SEED_0 = "83422ba1e1b7b3cbb699b873135f0e30120a553f97e5b201c8f9c5ab4479af43"


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return build_corpus(40, seed=0)


def test_splitmix64_matches_the_reference_stream():
    # First outputs of the reference splitmix64 from state 0.
    rng = SplitMix64(0)
    assert [rng.next_u64() for _ in range(2)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_weighted_choice_picks_keys_in_proportion_to_their_weights():
    rng = SplitMix64(7)
    table = {"rare": 1, "common": 3, "most": 6}
    draws = [rng.weighted(table) for _ in range(20_000)]
    for key, weight in table.items():
        assert abs(draws.count(key) / len(draws) - weight / 10) < 0.015, key


def test_weighted_choice_with_equal_weights_is_the_uniform_choice():
    # So a table of ones draws exactly what choice() draws from its keys.
    keys = ("a", "b", "c", "d", "e")
    weighted, uniform = SplitMix64(3), SplitMix64(3)
    table = dict.fromkeys(keys, 1)
    assert [weighted.weighted(table) for _ in range(200)] == [
        uniform.choice(keys) for _ in range(200)
    ]


def test_weighted_choice_rejects_tables_without_positive_weight():
    for table in ({}, {"a": 0}, {"a": -1, "b": 2}):
        with pytest.raises(ValueError):
            SplitMix64(0).weighted(table)


def test_every_grammar_weight_table_has_positive_integer_weights():
    # Every module-level dict in the generator is a weight table; integers keep draws exact.
    tables = {name: value for name, value in vars(python_code).items()
              if name.isupper() and isinstance(value, dict)}
    assert {"STATEMENT_FORMS", "NUM_EXPR_FORMS", "BOOL_EXPR_FORMS"} <= set(tables)
    assert len(tables) >= 10
    for name, table in tables.items():
        assert table, name
        for form, weight in table.items():
            assert isinstance(form, str) and type(weight) is int and weight > 0, (name, form)


def test_same_seed_gives_identical_bytes_and_sha256(docs):
    again = build_corpus(40, seed=0)
    assert again == docs
    assert corpus_sha256(again) == corpus_sha256(docs)


def test_pinned_sha256_of_a_small_corpus():
    assert corpus_sha256(build_corpus(20, seed=0)) == PINNED_SHA256_20_DOCS_SEED_0


def test_different_seeds_give_different_documents(docs):
    other = build_corpus(40, seed=1)
    assert all(a != b for a, b in zip(docs, other, strict=True))
    assert corpus_sha256(other) != corpus_sha256(docs)


def test_a_smaller_corpus_is_a_prefix_of_a_larger_one(docs):
    assert build_corpus(10, seed=0) == docs[:10]


def test_documents_are_ascii_python_of_a_few_hundred_to_a_few_thousand_bytes(docs):
    for doc in docs:
        assert doc.isascii()
        assert chr(DOCUMENT_SEPARATOR) not in doc
        ast.parse(doc)  # raises on a syntax error
    sizes = sorted(len(doc) for doc in docs)
    assert 200 <= sizes[len(sizes) // 2] <= 5000
    assert sizes[0] >= 100 and sizes[-1] <= 20_000


def test_names_defined_early_are_reused_far_below(docs):
    # The corpus exists to reward copying from far back: check that it really asks for it.
    far_reuses = 0
    for doc in docs:
        for node in ast.walk(ast.parse(doc)):
            if isinstance(node, ast.FunctionDef):
                params = {a.arg for a in node.args.args} - {"self"}
                body_start = node.body[0].lineno
                source_lines = doc.splitlines()
                for line in source_lines[body_start + 3 : node.end_lineno]:
                    far_reuses += any(f" {p}" in line or f"({p}" in line for p in params)
    assert far_reuses > 5 * len(docs)


def test_split_is_by_document_and_covers_every_document_once(docs):
    train, val = split_documents(docs, val_fraction=0.25, seed=0)
    assert len(val) == 10 and len(train) == 30
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(docs)
    assert split_documents(docs, val_fraction=0.25, seed=0) == (train, val)
    assert split_documents(docs, val_fraction=0.25, seed=1) != (train, val)


def test_tokens_end_every_document_with_the_separator(docs):
    tokens = tokens_from_documents(docs[:3])
    assert tokens.dtype == torch.uint8
    assert int((tokens == DOCUMENT_SEPARATOR).sum()) == 3
    assert tokens[-1] == DOCUMENT_SEPARATOR
    assert decode(tokens).split(chr(DOCUMENT_SEPARATOR))[:3] == docs[:3]


def test_encode_and_decode_round_trip():
    text = 'def total(prices):\n    return sum(prices)  # "why"\n'
    assert decode(encode(text)) == text
    assert decode(torch.tensor(encode(text))) == text


def test_get_batch_is_deterministic_and_y_is_x_shifted_by_one(docs):
    data = tokens_from_documents(docs)
    x, y = get_batch(data, 4, 16, torch.Generator().manual_seed(3))
    x_again, y_again = get_batch(data, 4, 16, torch.Generator().manual_seed(3))
    assert torch.equal(x, x_again) and torch.equal(y, y_again)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    x_other, _ = get_batch(data, 4, 16, torch.Generator().manual_seed(4))
    assert not torch.equal(x, x_other)


def test_validation_windows_are_fixed_and_span_the_data(docs):
    data = tokens_from_documents(docs)
    x, y = validation_windows(data, 8, 32)
    x_again, _ = validation_windows(data, 8, 32)
    assert torch.equal(x, x_again)
    assert torch.equal(x[0], data[:32].long())
    assert torch.equal(y[-1], data[-32:].long())


def test_build_splits_records_the_corpus_hash():
    splits = build_splits(20, seed=0, val_fraction=0.1)
    assert splits.sha256 == corpus_sha256(build_corpus(20, seed=0))
    assert (splits.n_train_documents, splits.n_val_documents) == (18, 2)
    assert len(splits.train) + len(splits.val) == len(tokens_from_documents(build_corpus(20)))


def test_torch_source_corpus_is_the_pinned_wheels_files_byte_for_byte():
    docs = torch_source.documents()
    assert corpus_sha256(docs) == torch_source.SHA256
    assert len(docs) > 1000 and all(DOCUMENT_SEPARATOR not in doc.encode() for doc in docs)
    splits = torch_source.build_splits()
    assert len(splits.train) > 5 * len(splits.val) > 10_000_000  # split by file, about 9:1


def test_torch_source_corpus_refuses_other_files(tmp_path):
    for package in torch_source.PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "nn" / "linear.py").write_text("class Linear: ...\n")
    with pytest.raises(torch_source.CorpusUnavailable, match=r"torch==2\.13\.0"):
        torch_source.documents(tmp_path)
