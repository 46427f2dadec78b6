"""Tokenizers: text to integer ids and back.

A language model sees text as a sequence of integers, one per token. Two
tokenizers, both built from a text with ``fit(text)`` (or ``from_text``):

* ``CharTokenizer``: one token per Unicode character. Ids follow code-point
  order (``'\\n'`` first, then ``' '``, ``'!'``, ...), as in char-rnn.
* ``WordTokenizer``: words and punctuation marks, split by ``WORD_PATTERN``;
  newlines are tokens too, so generated text keeps its lines. Ids follow
  frequency rank (id 0 is the most frequent token), the order a
  frequency-binned class hierarchy wants.

Both keep ``counts[i]``, how often token ``i`` occurred in the fitted text.
``max_vocab`` / ``min_count`` keep only the frequent tokens; the rest become
one unknown token (``'<unk>'`` for words, ``'\\ufffd'`` for characters) whose
count is the sum of theirs.

Vocabularies are saved as JSON (never pickle) through ``tinyar.fileio``
(a fresh temporary file, renamed into place), so a crash never leaves half a
file. ``from_dict`` checks every field of what it is given (a checkpoint's
metadata may come from anyone) and names the key that is wrong::

    tok = CharTokenizer.from_text(text)
    ids = tok.encode("To be")        # int64 array
    tok.decode(ids) == "To be"
    tok.save("vocab.json"); Tokenizer.load("vocab.json")
"""
import numbers
import re
from collections import Counter
from pathlib import Path

import numpy as np

from .. import fileio
from ..errors import CheckpointError, DTypeError, ShapeError, TinyarError

__all__ = ["Tokenizer", "CharTokenizer", "WordTokenizer", "TokenError", "WORD_PATTERN",
           "UNK_WORD", "UNK_CHAR"]

FORMAT = "tinyar.tokenizer"
VERSION = 1
#: Largest vocabulary ``from_dict`` accepts (Penn Treebank has 10^4 words, big models 10^5).
MAX_VOCAB = 10_000_000
#: Longest token and longest split pattern ``from_dict`` accepts, in characters.
MAX_TOKEN_CHARS = 10_000
MAX_PATTERN_CHARS = 1_000

UNK_WORD = "<unk>"
UNK_CHAR = "\ufffd"   # the Unicode replacement character, shown as a question mark in a box

# In order of preference: a literal '<unk>' (so Penn Treebank's own unknown
# word stays one token); a word, contractions included (know't, don't, I'll);
# any single character that is neither a word character nor whitespace
# (punctuation, operators, each one a token); a newline. Other whitespace
# (spaces, tabs, '\r') separates tokens and is dropped.
WORD_PATTERN = r"<unk>|\w+(?:'\w+)*|[^\w\s]|\n"

# How WordTokenizer.decode puts spaces back: one space between tokens, except
# before a closing mark, after an opening mark, and on either side of a newline.
_NO_SPACE_BEFORE = set(".,;:!?)]}\n")
_NO_SPACE_AFTER = set("([{\n")


class TokenError(TinyarError, ValueError):
    """Text holds tokens outside the vocabulary, or ids fall outside [0, vocab_size)."""


class Tokenizer:
    """What both tokenizers share: the vocabulary, counts, unknown tokens, JSON.

    Attributes:
        itos: list of tokens; ``itos[i]`` is the token of id ``i``.
        stoi: dict token -> id.
        counts: int64 array (vocab_size,): occurrences of each token in the
            fitted text (the unknown token counts everything it stands for).
        unk_token: the unknown token, or None when the vocabulary has none.
    """
    unk_symbol = UNK_WORD     # subclasses choose their unknown token
    what = "tokens"           # how error messages name the tokens

    def __init__(self, max_vocab=None, min_count=1, add_unk=False):
        if max_vocab is not None and int(max_vocab) < 2:
            raise ValueError(f"{type(self).__name__}: max_vocab must be at least 2, "
                             f"got {max_vocab}")
        if int(min_count) < 1:
            raise ValueError(f"{type(self).__name__}: min_count must be at least 1, "
                             f"got {min_count}")
        self.max_vocab = None if max_vocab is None else int(max_vocab)
        self.min_count = int(min_count)
        self.add_unk = bool(add_unk)
        self._set_vocab([], [], None)

    # ----------------------------------------------------------------- building
    @classmethod
    def from_text(cls, text, **kwargs):
        """Build a tokenizer and fit it: ``CharTokenizer.from_text(text, max_vocab=100)``."""
        return cls(**kwargs).fit(text)

    def fit(self, text):
        """Build the vocabulary from ``text``; returns self."""
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__}.fit: expected a str, got {type(text).__name__}")
        tokens, counts = self._count(text)
        if not tokens:
            raise TokenError(f"{type(self).__name__}.fit: the text holds no {self.what}")
        # Rank by frequency, ties by the token itself, so the same text always
        # gives the same vocabulary.
        ranked = sorted(zip(tokens, counts), key=lambda tc: (-tc[1], tc[0]))
        # The unknown token itself may occur in the text (Penn Treebank's
        # '<unk>'); it is never an ordinary token.
        ordinary = [(t, c) for t, c in ranked if t != self.unk_symbol]
        kept = [(t, c) for t, c in ordinary if c >= self.min_count]
        need_unk = self.add_unk or len(ordinary) < len(ranked) or len(kept) < len(ordinary)
        if self.max_vocab is not None and len(kept) + need_unk > self.max_vocab:
            need_unk = True
            kept = kept[:self.max_vocab - 1]
        if need_unk:
            unk_count = sum(counts) - sum(c for _, c in kept)
            kept.append((self.unk_symbol, unk_count))
        kept = self._order(kept)
        self._set_vocab([t for t, _ in kept], [c for _, c in kept],
                        self.unk_symbol if need_unk else None)
        return self

    def _order(self, pairs):
        """Id order of the vocabulary: frequency rank (subclasses may differ)."""
        return sorted(pairs, key=lambda tc: (-tc[1], tc[0]))

    def _set_vocab(self, itos, counts, unk_token):
        self.itos = list(itos)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.counts = np.asarray(counts, dtype=np.int64).reshape(len(self.itos))
        self.unk_token = unk_token
        self.unk_id = self.stoi[unk_token] if unk_token is not None else None

    @property
    def vocab_size(self):
        return len(self.itos)

    def __len__(self):
        return len(self.itos)

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"

    # ---------------------------------------------------------------- encoding
    def encode(self, text, errors="strict"):
        """Token ids of ``text`` as an int64 array.

        ``errors='strict'`` raises ``TokenError`` naming the unknown tokens;
        ``errors='replace'`` maps them to the unknown token's id.
        """
        if errors not in ("strict", "replace"):
            raise ValueError(f"{self!r}.encode: errors must be 'strict' or 'replace', "
                             f"got {errors!r}")
        if not isinstance(text, str):
            raise TypeError(f"{self!r}.encode: expected a str, got {type(text).__name__}")
        if self.vocab_size == 0:
            raise TokenError(f"{self!r}: no vocabulary yet; call fit(text) or build it with "
                             f"{type(self).__name__}.from_text(text)")
        ids, unknown = self._lookup(text)       # ids, and a mask of unknown positions
        if unknown.any():
            if errors == "strict" or self.unk_id is None:
                raise TokenError(self._unknown_message(text, unknown, errors))
            ids[unknown] = self.unk_id
        return ids

    def _unknown_message(self, text, unknown, errors):
        bad = list(dict.fromkeys(self._tokens_at(text, unknown)))     # distinct, first-seen order
        shown = ", ".join(repr(t) for t in bad[:5])
        more = f" (first 5 of {len(bad)})" if len(bad) > 5 else ""
        msg = (f"{self!r}: {len(bad)} unknown {self.what} not in the vocabulary, "
               f"{int(unknown.sum())} occurrences: {shown}{more}; ")
        if self.unk_id is None:
            return msg + (f"this vocabulary has no unknown token, so errors='replace' cannot "
                          f"help: fit on text that holds them, or build the tokenizer with "
                          f"add_unk=True")
        return msg + (f"encode with errors='replace' to map them to {self.unk_token!r}, "
                      f"or fit on text that holds them")

    def decode(self, ids):
        """The text of a 1-D sequence of ids (a list or an integer array)."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if not np.issubdtype(ids.dtype, np.integer):
            raise DTypeError(f"{self!r}.decode: expected integer ids, got dtype {ids.dtype.name}")
        if ids.ndim != 1:
            raise ShapeError(f"{self!r}.decode: expected a 1-D sequence of ids, got shape "
                             f"{tuple(ids.shape)}; decode one row at a time")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise TokenError(f"{self!r}.decode: ids outside [0, {self.vocab_size}): "
                             f"{np.unique(ids[bad])[:5].tolist()}")
        return self._join(ids.astype(np.int64))

    # --------------------------------------------------------- saving, loading
    def to_dict(self):
        """Everything needed to rebuild this tokenizer, as JSON-ready types."""
        return {"format": FORMAT, "version": VERSION, "type": type(self).__name__,
                "config": self._config(), "unk_token": self.unk_token,
                "tokens": list(self.itos), "counts": self.counts.tolist()}

    def _config(self):
        return {"max_vocab": self.max_vocab, "min_count": self.min_count, "add_unk": self.add_unk}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from ``to_dict()``; ``Tokenizer.from_dict`` picks the right subclass.

        Every field is checked (type, size, duplicates, the unknown token in the
        vocabulary); a wrong one is a ``CheckpointError`` naming its key.
        """
        who = f"{cls.__name__}.from_dict"
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CheckpointError(f"{who}: not a tinyar tokenizer (expected 'format': "
                                  f"{FORMAT!r})")
        version = d.get("version")
        if not _is_int(version) or version != VERSION:
            raise CheckpointError(f"{who}: tokenizer format version {version!r}, this tinyar "
                                  f"reads version {VERSION}")
        kinds = {k.__name__: k for k in (CharTokenizer, WordTokenizer)}
        kind_name = d.get("type")
        kind = kinds.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None or not issubclass(kind, cls):
            raise CheckpointError(f"{who}: the file holds a {_short(kind_name)}, not a "
                                  f"{cls.__name__}")
        who = f"{kind.__name__}.from_dict"
        tokens = _token_list(who, d.get("tokens"))
        counts = _count_list(who, d.get("counts"), len(tokens))
        unk = d.get("unk_token")
        if unk is not None and (not isinstance(unk, str) or unk not in set(tokens)):
            raise CheckpointError(f"{who}: key 'unk_token' must be null or one of the tokens, "
                                  f"got {_short(unk)}")
        config = kind._checked_config(who, d.get("config", {}))
        tok = kind(**config)
        tok._set_vocab(tokens, counts, unk)
        return tok

    @classmethod
    def _checked_config(cls, who, config):
        """The constructor arguments in ``config``, each of the right type and range."""
        if not isinstance(config, dict):
            raise CheckpointError(f"{who}: key 'config' must be an object, got "
                                  f"{type(config).__name__}")
        known = cls._config_keys()
        unknown = [k for k in config if k not in known]
        if unknown:
            raise CheckpointError(f"{who}: key 'config' has unknown entries "
                                  f"{_short(unknown[:5])}; expected some of "
                                  f"{sorted(known)}")
        for key, value in config.items():
            ok, expected = known[key](value)
            if not ok:
                raise CheckpointError(f"{who}: key 'config.{key}' must be {expected}, got "
                                      f"{_short(value)}")
        return dict(config)

    @classmethod
    def _config_keys(cls):
        """{config key: check(value) -> (ok, what was expected)}."""
        return {
            "max_vocab": lambda v: (v is None or (_is_int(v) and 2 <= v <= MAX_VOCAB),
                                    f"null or an integer in [2, {MAX_VOCAB:,}]"),
            "min_count": lambda v: (_is_int(v) and v >= 1, "an integer >= 1"),
            "add_unk": lambda v: (isinstance(v, bool), "true or false"),
        }

    def save(self, path):
        """Write the vocabulary as JSON: to a fresh temporary file, renamed over ``path``."""
        path = Path(path)
        fileio.write_json(path, self.to_dict(), indent=1)
        return path

    @classmethod
    def load(cls, path, follow_symlinks=True):
        """Read a file written by ``save`` (bounded in size and depth).

        ``follow_symlinks=False`` refuses a symlink (a file inside a run folder).
        """
        try:
            d = fileio.read_json(path, follow_symlinks=follow_symlinks, what="tokenizer file")
        except fileio.FileError as e:
            raise CheckpointError(f"{cls.__name__}.load: {e}") from None
        return cls.from_dict(d)

    # What the subclasses fill in.
    def _count(self, text):
        """Distinct tokens of ``text`` and how often each occurs: (list, list)."""
        raise NotImplementedError  # abstract

    def _lookup(self, text):
        """(int64 ids with anything at unknown positions, bool mask of unknown positions)."""
        raise NotImplementedError  # abstract

    def _tokens_at(self, text, mask):
        """The tokens of ``text`` where ``mask`` is True."""
        raise NotImplementedError  # abstract

    def _join(self, ids):
        raise NotImplementedError  # abstract


def _is_int(value):
    """A JSON integer (``True`` is a bool, not the number 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _short(value, limit=60):
    """``repr(value)``, cut to ``limit`` characters (for messages about hostile data)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _token_list(who, tokens):
    if not isinstance(tokens, list) or not tokens:
        raise CheckpointError(f"{who}: key 'tokens' must be a non-empty list of strings, got "
                              f"{type(tokens).__name__}" + (" (empty)" if tokens == [] else ""))
    if len(tokens) > MAX_VOCAB:
        raise CheckpointError(f"{who}: key 'tokens' lists {len(tokens):,} tokens; at most "
                              f"{MAX_VOCAB:,} are read")
    for i, t in enumerate(tokens):
        if not isinstance(t, str) or not t or len(t) > MAX_TOKEN_CHARS:
            raise CheckpointError(f"{who}: key 'tokens' item {i} must be a string of 1 to "
                                  f"{MAX_TOKEN_CHARS:,} characters, got {_short(t)}")
    if len(set(tokens)) != len(tokens):
        seen = set()
        dup = next(t for t in tokens if t in seen or seen.add(t))
        raise CheckpointError(f"{who}: key 'tokens' lists {_short(dup)} twice; inconsistent "
                              f"vocabulary")
    return tokens


def _count_list(who, counts, n):
    if not isinstance(counts, list):
        raise CheckpointError(f"{who}: key 'counts' must be a list of integers, got "
                              f"{type(counts).__name__}")
    if len(counts) != n:
        raise CheckpointError(f"{who}: inconsistent vocabulary: key 'counts' has "
                              f"{len(counts):,} entries for {n:,} tokens")
    for i, c in enumerate(counts):
        if not _is_int(c) or not 0 <= c < 2**63:
            raise CheckpointError(f"{who}: key 'counts' item {i} must be an integer in "
                                  f"[0, 2**63), got {_short(c)}")
    return counts


def _code_points(text):
    # UTF-32 stores one code point in 4 bytes: the text becomes an integer array
    # without a Python loop. 'surrogatepass' lets lone surrogates through.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class CharTokenizer(Tokenizer):
    """One token per character; ids in code-point order.

    Encoding is vectorised: the text becomes an array of code points, and a
    binary search (``np.searchsorted``) in the sorted vocabulary gives ids.
    """
    unk_symbol = UNK_CHAR
    what = "characters"

    def _order(self, pairs):
        return sorted(pairs, key=lambda tc: tc[0])

    def _set_vocab(self, itos, counts, unk_token):
        if any(len(t) != 1 for t in itos):
            raise CheckpointError(f"CharTokenizer: key 'tokens' must list single characters, "
                                  f"got {_short([t for t in itos if len(t) != 1][:5])}")
        points = np.array([ord(t) for t in itos], dtype=np.uint32)
        if np.any(np.diff(points.astype(np.int64)) <= 0):
            raise CheckpointError("CharTokenizer: key 'tokens' must list its characters sorted "
                                  "by code point, each once")
        super()._set_vocab(itos, counts, unk_token)
        self._points = points

    def _count(self, text):
        points, counts = np.unique(_code_points(text), return_counts=True)
        return [chr(p) for p in points.tolist()], counts.tolist()

    def _lookup(self, text):
        points = _code_points(text)
        ids = np.searchsorted(self._points, points).astype(np.int64)
        np.minimum(ids, self.vocab_size - 1, out=ids)
        unknown = self._points[ids] != points
        return ids, unknown

    def _tokens_at(self, text, mask):
        return [chr(p) for p in _code_points(text)[mask].tolist()]

    def _join(self, ids):
        return self._points[ids].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


def _compiles(pattern):
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return False
    return True


class WordTokenizer(Tokenizer):
    """Words, punctuation marks and newlines, split by ``WORD_PATTERN``.

    Spaces are not tokens: ``decode`` puts one space between tokens, none
    before ``.,;:!?)]}``, none after ``([{`` and none around a newline. So
    ``decode(encode(s)) == s`` for text written that way ("Hello, world!"),
    and ``encode(decode(ids))`` gives back ``ids`` for any ids.

    The vocabulary always holds ``'<unk>'`` (count 0 when nothing was left
    out), so ``encode(text, errors='replace')`` works on new text.
    ``lower=True`` lower-cases the text first (as in Penn Treebank).
    """
    unk_symbol = UNK_WORD
    what = "words"

    def __init__(self, max_vocab=None, min_count=1, add_unk=True, pattern=WORD_PATTERN,
                 lower=False):
        self.pattern = str(pattern)
        self.lower = bool(lower)
        self._regex = re.compile(self.pattern)
        super().__init__(max_vocab=max_vocab, min_count=min_count, add_unk=add_unk)

    def _config(self):
        return {**super()._config(), "pattern": self.pattern, "lower": self.lower}

    @classmethod
    def _config_keys(cls):
        return {**super()._config_keys(),
                "pattern": lambda v: (isinstance(v, str) and 0 < len(v) <= MAX_PATTERN_CHARS
                                      and _compiles(v),
                                      f"a valid regular expression of at most "
                                      f"{MAX_PATTERN_CHARS:,} characters"),
                "lower": lambda v: (isinstance(v, bool), "true or false")}

    def split(self, text):
        """The token strings of ``text``."""
        return self._regex.findall(text.lower() if self.lower else text)

    def _set_vocab(self, itos, counts, unk_token):
        super()._set_vocab(itos, counts, unk_token)
        self._tokens = np.array(self.itos, dtype=object)
        self._glue_before = np.array([t in _NO_SPACE_BEFORE for t in self.itos], dtype=bool)
        self._glue_after = np.array([t in _NO_SPACE_AFTER for t in self.itos], dtype=bool)

    def _count(self, text):
        counter = Counter(self.split(text))
        return list(counter.keys()), list(counter.values())

    def _lookup(self, text):
        tokens = self.split(text)
        get = self.stoi.get
        ids = np.fromiter((get(t, -1) for t in tokens), dtype=np.int64, count=len(tokens))
        return ids, ids < 0

    def _tokens_at(self, text, mask):
        return [t for t, bad in zip(self.split(text), mask) if bad]

    def _join(self, ids):
        space = ~(self._glue_after[ids[:-1]] | self._glue_before[ids[1:]])
        pieces = np.empty(2 * ids.size - 1, dtype=object)
        pieces[0::2] = self._tokens[ids]
        pieces[1::2] = np.where(space, " ", "")
        return "".join(pieces.tolist())
