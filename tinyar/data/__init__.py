"""Data for tinyar's models: tokenizers, text corpora, batching, downloads.

    from tinyar.data import CharTokenizer, load_corpus, split, StreamBatcher

    text = load_corpus("stdlib")                 # or "shakespeare", or a path
    tok = CharTokenizer.from_text(text)
    train, val = split(tok.encode(text), 0.9)
    for x, y in StreamBatcher(train, batch_size=32, bptt=64):
        ...
"""
from .batching import RandomWindowBatcher, StreamBatcher
from .corpora import CorpusError, load_corpus, split, stdlib_corpus
from .download import DownloadError, data_dir, fetch
from .tokenizers import CharTokenizer, TokenError, Tokenizer, WordTokenizer

__all__ = ["CharTokenizer", "WordTokenizer", "Tokenizer", "TokenError",
           "load_corpus", "stdlib_corpus", "split", "CorpusError",
           "data_dir", "fetch", "DownloadError",
           "StreamBatcher", "RandomWindowBatcher"]
