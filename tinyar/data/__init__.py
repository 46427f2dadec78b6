"""Data for tinyar's models: tokenizers, text corpora, batching, downloads, image sets,
the glyph set, class hierarchies and augmentation.

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
from .augment import (Augment, AugmentError, channel_stats, denormalize, flip_allowed,
                      normalize, random_crop, random_hflip, random_rotation, rotate, to_float)
from .builtin_hierarchies import builtin_hierarchies, hierarchy_for
from .glyphs import GLYPH_CHARS, GlyphError, make_glyphs, save_grid_png
from ..nn.hierarchy import ClassHierarchy, HierarchyError
from .images import (ImageFileError, image_datasets, load_images, read_cifar10, read_cifar100,
                     read_idx, write_cifar, write_idx)
from .spiral import make_spiral

__all__ = ["CharTokenizer", "WordTokenizer", "Tokenizer", "TokenError",
           "load_corpus", "stdlib_corpus", "split", "CorpusError",
           "data_dir", "fetch", "DownloadError",
           "StreamBatcher", "RandomWindowBatcher",
           "load_images", "image_datasets", "read_idx", "write_idx", "read_cifar10",
           "read_cifar100", "write_cifar", "ImageFileError", "make_glyphs", "save_grid_png",
           "GLYPH_CHARS", "GlyphError", "hierarchy_for", "builtin_hierarchies", "ClassHierarchy",
           "HierarchyError", "Augment", "AugmentError", "random_crop", "rotate",
           "random_rotation", "random_hflip", "flip_allowed", "normalize", "denormalize",
           "channel_stats", "to_float", "make_spiral"]
