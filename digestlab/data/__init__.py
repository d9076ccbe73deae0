"""The deterministic training corpus and its byte-level tokens."""

from digestlab.data.corpus import (
    DOCUMENT_SEPARATOR,
    VOCAB_SIZE,
    CorpusSplits,
    build_corpus,
    build_splits,
    corpus_sha256,
    decode,
    encode,
    get_batch,
    split_documents,
    tokens_from_documents,
    validation_windows,
)

__all__ = [
    "DOCUMENT_SEPARATOR",
    "VOCAB_SIZE",
    "CorpusSplits",
    "build_corpus",
    "build_splits",
    "corpus_sha256",
    "decode",
    "encode",
    "get_batch",
    "split_documents",
    "tokens_from_documents",
    "validation_windows",
]
