"""Word-level tokenizer: built offline, pads to max length, saves and loads like any HF tokenizer."""

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from suti.errors import ConfigError
from suti.models.tokenizer import SPECIAL_TOKENS, build_word_tokenizer, clean_words

WORDS = ["a", "red", "circle", "in", "the", "jungle", "striped", "hat"]


def test_encodes_words_with_bos_eos_and_pads_to_max_length():
    tok = build_word_tokenizer(WORDS, max_length=8)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert len(tok) == len(WORDS) + len(SPECIAL_TOKENS)
    assert [tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id] == [0, 1, 2, 3]
    enc = tok(["A Red CIRCLE", "a dog"], padding="max_length", max_length=8, truncation=True)
    ids = enc.input_ids
    assert ids[0][:5] == [2, tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("red"),
                          tok.convert_tokens_to_ids("circle"), 3]
    assert ids[0][5:] == [0, 0, 0] and enc.attention_mask[0] == [1] * 5 + [0] * 3
    assert ids[1][2] == tok.unk_token_id  # unknown word
    assert all(len(x) == 8 for x in ids)


def test_truncation_keeps_length_and_eos():
    tok = build_word_tokenizer(WORDS, max_length=6)
    ids = tok("a red circle in the jungle with a hat", padding="max_length", max_length=6, truncation=True).input_ids
    assert len(ids) == 6 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


def test_save_and_load_with_auto_tokenizer(tmp_path):
    tok = build_word_tokenizer(WORDS, max_length=8)
    tok.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path, local_files_only=True),
                   PreTrainedTokenizerFast.from_pretrained(tmp_path, local_files_only=True)):
        assert loaded.model_max_length == 8
        text = ["a striped hat in the jungle", "red"]
        kw = dict(padding="max_length", max_length=8, truncation=True)
        assert loaded(text, **kw).input_ids == tok(text, **kw).input_ids


def test_vocab_is_order_independent_and_validated():
    a = build_word_tokenizer(WORDS, 8)
    b = build_word_tokenizer(list(reversed(WORDS)) + ["RED"], 8)
    assert a.get_vocab() == b.get_vocab()
    assert clean_words(["B", "a", "b"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="one non-empty word"):
        build_word_tokenizer(["two words"], 8)
    with pytest.raises(ConfigError, match="empty"):
        build_word_tokenizer([], 8)
    with pytest.raises(ConfigError, match="special"):
        build_word_tokenizer(["[pad]"], 8)


def test_world_vocabulary_has_no_unknown_words():
    from suti.world import vocabulary

    words = vocabulary()
    tok = build_word_tokenizer(words, max_length=len(words) + 2)
    ids = tok(" ".join(words)).input_ids
    assert tok.unk_token_id not in ids and len(ids) == len(words) + 2
