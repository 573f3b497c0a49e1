"""WordPiece tokenisation of NGAME's texts (Dahiya et al., "NGAME: Negative Mining-aware Mini-batching for
Extreme Classification", WSDM 2023; official `tools/create_tokenized_files.py`: the encoder's own
tokenizer, every text padded and truncated to `max_length`, 32 tokens for titles).

BERT's tokenizer (Devlin et al. 2019, the one DistilBERT uses): text cleaning, lower-casing and accent
stripping for the uncased vocabularies, splitting on whitespace, punctuation and around CJK characters,
then greedy longest-match-first WordPiece over the `vocab.txt` that comes with the weights (`##`
continuations, `[UNK]` for a word it cannot cover or longer than 100 characters), inside `[CLS] ... [SEP]`.
It runs on Hugging Face's `tokenizers` (Rust, no torch), configured as `transformers.BertTokenizerFast`.
"""
import os
from typing import Sequence, Tuple

import numpy as np
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.models import WordPiece

from inception_zoo.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def wordpiece(vocab_path: str, max_len: int, lowercase: bool = True) -> BertWordPieceTokenizer:
  """BERT's tokenizer over `vocab_path` (one token per line, the line number its id), truncating and
  padding every text to `max_len` tokens ([CLS] and [SEP] included)."""
  if not os.path.isfile(vocab_path):
    raise UserError(f"vocabulary {vocab_path} does not exist (the vocab.txt beside the DistilBERT weights)")
  if max_len < 2:
    raise UserError(f"max_len {max_len} leaves no room for [CLS] and [SEP]")
  vocab = WordPiece.read_file(vocab_path)
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise UserError(f"{vocab_path} lacks the special token {missing[0]} (is it a BERT vocabulary?)")
  tokenizer = BertWordPieceTokenizer(vocab, lowercase=lowercase)
  tokenizer.enable_truncation(max_len)
  tokenizer.enable_padding(length=max_len, pad_id=vocab["[PAD]"], pad_token="[PAD]")
  return tokenizer


def tokenize(texts: Sequence[str], vocab_path: str, max_len: int, lowercase: bool = True
             ) -> Tuple[np.ndarray, np.ndarray]:
  """(input_ids, attention_mask), both int32 of shape (len(texts), max_len)."""
  encodings = wordpiece(vocab_path, max_len, lowercase).encode_batch(list(texts))
  as_array = lambda rows: np.asarray(rows, np.int32).reshape(len(encodings), max_len)
  return as_array([e.ids for e in encodings]), as_array([e.attention_mask for e in encodings])
