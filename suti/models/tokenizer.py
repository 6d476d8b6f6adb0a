"""Word-level tokenizer for world captions, built offline with `tokenizers` (no hub, no merges file).

World captions are lowercase words separated by spaces, so a closed word-level vocabulary is exact:
every caption word has its own id, anything else maps to [UNK]. The result is a transformers
`PreTrainedTokenizerFast`, so it pads/truncates to `max_length`, `save_pretrained`s, and loads back
with `AutoTokenizer.from_pretrained(dir)` or as a diffusers pipeline component.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from suti.errors import ConfigError

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3


def world_vocabulary() -> list[str]:
    """All words a world caption can contain, from `suti.world.vocabulary()` (imported lazily)."""
    try:
        from suti.world import vocabulary
    except ImportError as e:
        raise ConfigError(f"text.vocab: 'world' needs suti.world.vocabulary(), which is not available ({e})") from None
    return list(vocabulary())


def clean_words(words: Iterable[str]) -> list[str]:
    """Lower-cased, de-duplicated, sorted words (sorted so ids do not depend on iteration order)."""
    out = set()
    for w in words:
        if not isinstance(w, str):
            raise ConfigError(f"text.vocab: every word must be a string, got {w!r}")
        w = w.strip().lower()
        if not w or len(w.split()) != 1:
            raise ConfigError(f"text.vocab: every entry must be one non-empty word, got {w!r}")
        if w.upper() in SPECIAL_TOKENS or w in SPECIAL_TOKENS:
            raise ConfigError(f"text.vocab: {w!r} collides with a special token")
        out.add(w)
    if not out:
        raise ConfigError("text.vocab: the word list is empty")
    return sorted(out)


def build_word_tokenizer(words: Iterable[str], max_length: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words`: lowercase + whitespace split, [BOS] text [EOS], padded with [PAD]."""
    if max_length < 3:
        raise ConfigError(f"text.max_length: must be >= 3, got {max_length}")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in clean_words(words):
        vocab[w] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
    )
