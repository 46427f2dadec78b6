import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinyar.errors import CheckpointError, DTypeError, ShapeError
from tinyar.data.tokenizers import (CharTokenizer, TokenError, Tokenizer, UNK_CHAR, UNK_WORD,
                                    WordTokenizer)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


# ------------------------------------------------------------------- characters
def test_char_vocab_is_sorted_and_counts_match():
    tok = CharTokenizer.from_text("abcab\n")
    assert tok.itos == ["\n", "a", "b", "c"]
    assert tok.counts.tolist() == [1, 2, 2, 1]
    assert tok.counts.dtype == np.int64
    assert tok.vocab_size == 4 and tok.unk_token is None


def test_char_round_trip():
    tok = CharTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    assert ids.dtype == np.int64 and ids.shape == (len(TEXT),)
    assert [tok.itos[i] for i in ids] == list(TEXT)
    assert tok.decode(ids) == TEXT
    assert tok.decode(ids.tolist()) == TEXT
    assert tok.decode([]) == ""


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_char_round_trip_any_unicode(text):
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.counts.sum() == len(text)


def test_char_unknown_strict_names_the_characters():
    tok = CharTokenizer.from_text("hello")
    expected = r"3 unknown characters.*4 occurrences: 'x', ' ', 'é'"
    with pytest.raises(TokenError, match=expected) as info:
        tok.encode("hex éx")
    assert isinstance(info.value, ValueError)
    # no unknown token in this vocabulary: replace cannot help, and it says so
    with pytest.raises(TokenError, match="add_unk=True"):
        tok.encode("hex", errors="replace")


def test_char_unknown_lists_only_a_few():
    tok = CharTokenizer.from_text("a")
    with pytest.raises(TokenError, match=r"first 5 of 10"):
        tok.encode("0123456789")


def test_char_replace_with_unk():
    tok = CharTokenizer.from_text("hello", add_unk=True)
    assert UNK_CHAR in tok.stoi
    ids = tok.encode("hex!", errors="replace")
    assert tok.decode(ids) == f"he{UNK_CHAR}{UNK_CHAR}"


def test_char_min_count_and_max_vocab():
    text = "aaaabbbcc d"
    tok = CharTokenizer.from_text(text, min_count=2)
    assert set(tok.itos) == {"a", "b", "c", UNK_CHAR}
    assert tok.counts[tok.stoi[UNK_CHAR]] == 2          # ' ' and 'd'
    assert tok.counts.sum() == len(text)
    tok = CharTokenizer.from_text(text, max_vocab=3)
    assert set(tok.itos) == {"a", "b", UNK_CHAR}
    assert tok.counts[tok.stoi[UNK_CHAR]] == 4          # 'c', 'c', ' ', 'd'
    assert tok.decode(tok.encode("abcd", errors="replace")) == f"ab{UNK_CHAR}{UNK_CHAR}"


def test_decode_bad_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(TokenError, match=r"outside \[0, 3\).*\[3, 7\]"):
        tok.decode([0, 3, 7])
    with pytest.raises(TokenError, match="outside"):
        tok.decode([-1])
    with pytest.raises(DTypeError, match="integer"):
        tok.decode(np.array([0.0, 1.0]))
    with pytest.raises(ShapeError, match="1-D"):
        tok.decode(np.zeros((2, 2), dtype=np.int64))


def test_unfitted_and_bad_arguments():
    with pytest.raises(TokenError, match="fit"):
        CharTokenizer().encode("a")
    with pytest.raises(ValueError, match="errors"):
        CharTokenizer.from_text("a").encode("a", errors="ignore")
    with pytest.raises(ValueError, match="max_vocab"):
        CharTokenizer(max_vocab=1)
    with pytest.raises(TokenError, match="no characters"):
        CharTokenizer.from_text("")


# ------------------------------------------------------------------------ words
def test_word_split_pattern():
    tok = WordTokenizer()
    assert tok.split("We know't, we know't.\n  (a_b=3)") == \
        ["We", "know't", ",", "we", "know't", ".", "\n", "(", "a_b", "=", "3", ")"]
    assert tok.split("the <unk> cat") == ["the", "<unk>", "cat"]


def test_word_round_trip():
    tok = WordTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT          # TEXT is written the way decode spaces tokens
    assert "\n" in tok.stoi
    # encode(decode(ids)) == ids for any ids, even nonsense orders
    rng = np.random.default_rng(0)
    ids = rng.integers(0, tok.vocab_size, size=200)
    assert np.array_equal(tok.encode(tok.decode(ids)), ids)


def test_word_decode_spacing():
    tok = WordTokenizer.from_text("a ( b ) , c [ d ] .\n e")
    ids = tok.encode("a ( b ) , c [ d ] .\n e")
    assert tok.decode(ids) == "a (b), c [d].\ne"


def test_word_ids_follow_frequency_and_unk_always_present():
    tok = WordTokenizer.from_text("b a a c c c\n")
    assert tok.itos[:4] == ["c", "a", "\n", "b"]     # frequency rank, ties by token
    assert tok.unk_token == UNK_WORD and tok.counts[tok.unk_id] == 0
    assert np.all(np.diff(tok.counts) <= 0)
    with pytest.raises(TokenError, match=r"unknown words.*'dog'.*'cat'"):
        tok.encode("a dog c cat dog")
    ids = tok.encode("a dog", errors="replace")
    assert ids.tolist() == [tok.stoi["a"], tok.unk_id]
    assert tok.decode(ids) == "a <unk>"


def test_word_max_vocab_and_min_count():
    text = "the cat the dog the cat a bird"
    tok = WordTokenizer.from_text(text, max_vocab=3)
    # unk stands for dog, a, bird: it ranks by that count (3), ties by token ('<' < 't')
    assert tok.itos == [UNK_WORD, "the", "cat"]
    assert tok.counts.tolist() == [3, 3, 2]
    assert tok.decode(tok.encode("the bird", errors="replace")) == "the <unk>"
    tok = WordTokenizer.from_text(text, min_count=2)
    assert set(tok.itos) == {"the", "cat", UNK_WORD}
    assert tok.counts.sum() == 8
    # a literal <unk> in the text (Penn Treebank) counts as the unknown token
    tok = WordTokenizer.from_text("a <unk> b <unk>")
    assert tok.counts[tok.unk_id] == 2


def test_word_lower():
    tok = WordTokenizer.from_text("The the THE", lower=True)
    assert tok.itos[0] == "the" and tok.counts[0] == 3


# ------------------------------------------------------------------ saving
@pytest.mark.parametrize("make", [
    lambda: CharTokenizer.from_text(TEXT + "é\u2014", min_count=2),
    lambda: WordTokenizer.from_text(TEXT, max_vocab=8, lower=True),
])
def test_save_load_round_trip(tmp_path, make):
    tok = make()
    path = tok.save(tmp_path / "sub" / "vocab.json")
    assert json.loads(path.read_text())["type"] == type(tok).__name__
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]   # no temp file left
    for loader in (Tokenizer.load, type(tok).load):
        back = loader(path)
        assert type(back) is type(tok)
        assert back.itos == tok.itos and back.counts.tolist() == tok.counts.tolist()
        assert back.unk_token == tok.unk_token and back.to_dict() == tok.to_dict()
        assert np.array_equal(back.encode(TEXT, errors="replace"),
                              tok.encode(TEXT, errors="replace"))
    back = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert back.decode(back.encode(TEXT, errors="replace")) == \
        tok.decode(tok.encode(TEXT, errors="replace"))


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer file"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Tokenizer.load(bad)
    path = CharTokenizer.from_text("abc").save(tmp_path / "char.json")
    with pytest.raises(CheckpointError, match="not a WordTokenizer"):
        WordTokenizer.load(path)
    d = CharTokenizer.from_text("abc").to_dict()
    d["counts"] = d["counts"][:-1]
    with pytest.raises(CheckpointError, match="inconsistent"):
        Tokenizer.from_dict(d)
    with pytest.raises(CheckpointError, match="format"):
        Tokenizer.from_dict({"tokens": []})
