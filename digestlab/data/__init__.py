"""The deterministic training corpora and their byte-level tokens.

rng: the splitmix64 stream every generator draws from; python_code: the generator of small
Python modules (the corpus most experiments train on); torch_source: real text with no
download, the Python source of the pinned torch wheel (the CLA comparison's corpus); tokens:
tokens, splits and batches of any corpus's documents.
"""

from digestlab.data.python_code import build_corpus, build_splits
from digestlab.data.tokens import (
    DOCUMENT_SEPARATOR,
    VOCAB_SIZE,
    CorpusSplits,
    corpus_sha256,
    decode,
    encode,
    get_batch,
    split_documents,
    splits_from_documents,
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
    "splits_from_documents",
    "tokens_from_documents",
    "validation_windows",
]
