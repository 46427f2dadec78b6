"""``write_report(run)``: one self-contained HTML page about a run folder.

The page needs nothing but a browser: figures are PNGs embedded as base64
``data:`` URIs, the style sheet is inline, there is no JavaScript. It shows
whatever the folder holds, so it works for every kind of run:

    log.json       "config" -> a table; "history" (a list of records) -> curves
                   of every numeric key (losses together, lr, gradient norm,
                   the rest), the final value of each, and generated samples
                   (records with a "sample"); any other keys -> rendered generically
    metrics.json   rendered generically: scalars -> a table, lists of numbers ->
                   curves, small matrices (a confusion matrix) -> a table
    recorder.json  (``Recorder.save``) gradient flow, update ratios, activation
                   statistics and histograms
    model.npz      the model's class, configuration and parameter table
    best.npz       of a transformer language model: its attention maps for one prompt
                   (``attention.py``), loaded through ``train.lm.load_run`` (bounded)
    *.png          embedded as they are (loss curve, confusion matrices, ...)

A run folder may come from anyone (a tarball from a classmate), so the report
treats it as hostile. It reads only regular files inside the folder, never
through a symlink (``fileio.run_file``, ``follow_symlinks=False``), each with a
byte cap (JSON ``MAX_JSON_BYTES``, PNG ``MAX_PNG_BYTES``); a FIFO, a folder or a
symlink where a file should be is listed, not opened. A file that cannot be read
or is not what tinyar writes (wrong types, missing keys, not JSON, nested too
deep) becomes a visible note in the page, and the rest of the page is still
drawn. How much one page shows is bounded too (figures, table rows, images), so
that a huge file gives a long page, not an endless one. The page itself is
written atomically (``fileio.write_text``): a symlink planted at
``report.html`` is replaced, never written through.
"""
import base64
import html
import io
import json
import math
import os
import stat
import warnings

import numpy as np

from . import attention, figures
from .recorder import clean_record
from .. import fileio
from ..errors import CheckpointError, FileError

#: JSON files that are data, not results (shown only in the file list).
SKIP_JSON = ("vocab.json", "hierarchy.json")
MAX_MATRIX = 40  # larger numeric matrices are summarised, not tabulated
MAX_TABLE_ROWS = 100  # longer per-class columns become curves
MAX_TABLE_COLUMNS = 50
MAX_SAMPLES = 8
MAX_SAMPLE_CHARS = 20_000
#: Bytes read of each JSON result file, of each PNG, of all PNGs together.
MAX_JSON_BYTES = fileio.MAX_JSON_BYTES
MAX_PNG_BYTES = 20 * 2**20
MAX_PNG_TOTAL = 100 * 2**20
MAX_PNGS = 40
#: Other JSON files are rendered up to this size (larger ones are only listed).
MAX_OTHER_JSON_BYTES = 200_000
MAX_OTHER_JSON = 20
#: Figures on one page, rows of one table of values, files listed, points of one curve.
MAX_FIGURES = 60
MAX_ROWS = 500
MAX_FILES = 1000
MAX_POINTS = 20_000
#: Attention maps: tokens of the prompt, layers and heads drawn, heads in one figure.
MAX_ATTENTION_TOKENS = 48
MAX_ATTENTION_LAYERS = 6
MAX_ATTENTION_HEADS = 8
HEADS_PER_FIGURE = 4
#: Checkpoint members listed, and bytes of float arrays read to compute their norms.
MAX_MEMBERS = 500
MAX_NORM_BYTES = 256 * 2**20
PNG = b"\x89PNG\r\n\x1a\n"

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #4a7ab5; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 2em; color: #234; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; color: #345; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f4f8; }
td.num { text-align: right; font-family: Menlo, Consolas, monospace; }
tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f8fa; border: 1px solid #e1e4e8; padding: .7em; overflow-x: auto;
      white-space: pre-wrap; font-size: .85em; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.note { color: #666; font-size: .9em; }
.error { color: #a00; }
nav a { margin-right: 1em; }
"""


# --- small HTML helpers ---------------------------------------------------------------------
def _esc(value):
    """HTML-escaped text that UTF-8 can always encode (a file name with undecodable bytes,
    a lone surrogate from a JSON escape, appear as \\udcxx)."""
    text = str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text)


def _cut(text, limit):
    return text if len(text) <= limit else text[:limit] + " ..."


def _fmt(value):
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return _cut(f"{int(value):,}", 300)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.4e}"
        return f"{v:.6g}"
    if isinstance(value, (dict, list)):
        return _cut(json.dumps(value), 200)
    return _cut(str(value), 300)


def _table(rows, header=None):
    """rows: lists of cells; numbers are right-aligned."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_esc(_fmt(h) if not isinstance(h, str) else h)}"
                                    f"</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            cls = ' class="num"' if _is_number(cell) else ""
            cells.append(f"<td{cls}>{_esc(_fmt(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _note(text, cls="note"):
    return f'<p class="{cls}">{_esc(text)}</p>'


def _img(png_bytes, caption="", alt=""):
    data = base64.b64encode(png_bytes).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return (f'<figure><img alt="{_esc(alt or caption)}" src="data:image/png;base64,{data}">'
            f"{cap}</figure>")


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _kind(value):
    return {dict: "an object", list: "a list", str: "a text", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


class _Page:
    """What one report has drawn so far: its notes (files skipped or broken) and the
    number of figures, which ``MAX_FIGURES`` bounds."""

    def __init__(self):
        self.notes = []
        self.figures = 0
        self.skipped_figures = 0
        self.log = None  # log.json when it is an object (the attention section reads it)

    def figure(self, draw, caption=""):
        """Run a figures.* call into memory and embed it. A failure becomes a visible note:
        the data come from a file anyone could have written, and one bad figure must not
        cost the whole report."""
        if self.figures >= MAX_FIGURES:
            self.skipped_figures += 1
            return ""
        self.figures += 1
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():  # a name with a character the font lacks: a box
                warnings.filterwarnings("ignore", message="Glyph .* missing from font")
                draw(buffer)
        except Exception as exc:  # noqa: BLE001 (see the docstring)
            return (f'<p class="error">figure "{_esc(caption)}" failed: '
                    f'{_esc(type(exc).__name__)}: {_esc(_cut(str(exc), 300))}</p>')
        return _img(buffer.getvalue(), caption)


def _thin(xs, ys):
    """Every k-th point of a curve longer than ``MAX_POINTS`` (a figure is 600 pixels wide)."""
    if len(ys) <= MAX_POINTS:
        return xs, ys
    k = -(-len(ys) // MAX_POINTS)
    return xs[::k], ys[::k]


def _plot(page, curves, caption, **kwargs):
    curves = {k: _thin(list(xs), list(ys)) for k, (xs, ys) in curves.items()}
    return page.figure(lambda buf: figures.plot_series(buf, curves, **kwargs), caption)


# --- reading the run folder -----------------------------------------------------------------
_ABSENT = object()


def _run_path(run, name, page):
    """The path of ``name`` in ``run`` if it is a regular file, not a symlink; None (and a
    note) when it is something else."""
    try:
        return fileio.run_file(run, name)
    except FileError as exc:
        page.notes.append(f"{name} was not read: {exc}")
        return None


def _read_json(run, name, page, max_bytes=None):
    """The parsed JSON file ``name`` of the run folder, or ``_ABSENT`` (with a note)."""
    path = _run_path(run, name, page)
    if path is None:
        return _ABSENT
    try:
        return fileio.read_json(path, max_bytes or MAX_JSON_BYTES, follow_symlinks=False,
                                what=name)
    except FileError as exc:
        page.notes.append(f"{name} could not be read: {exc}")
        return _ABSENT


# --- generic rendering of JSON results ------------------------------------------------------
def _flatten(value, prefix=""):
    """Nested dicts as (dotted key, value) pairs; lists, and dicts of equally long
    numeric lists (per-class columns), stay whole. A generator's state ("rng") is
    not a result and is left out."""
    if isinstance(value, dict) and not _is_columns(value):
        for k, v in value.items():
            if k == "rng":
                continue
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, value


def _is_columns(value):
    """{"precision": [...], "recall": [...]}: numeric lists of one length, as a table."""
    return isinstance(value, dict) and len(value) > 1 and \
        all(_is_vector(v) for v in value.values()) and \
        len({len(v) for v in value.values()}) == 1


def _is_records(value):
    return isinstance(value, list) and value and all(isinstance(r, dict) for r in value) and \
        any(_is_number(v) for r in value for v in r.values())


def _is_vector(value):
    return isinstance(value, list) and len(value) > 1 and \
        all(_is_number(v) or v is None for v in value)


def _is_matrix(value):
    return isinstance(value, list) and value and all(_is_vector(r) or
                                                     (isinstance(r, list) and len(r) == 1 and
                                                      (_is_number(r[0]) or r[0] is None))
                                                     for r in value) and \
        len({len(r) for r in value}) == 1


def _names_for(key, n, flat):
    """Labels for the rows of a table: a sibling "names" list of n strings, if any."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    names = flat.get(f"{parent}.names" if parent else "names")
    if isinstance(names, list) and len(names) == n and all(isinstance(v, str) for v in names):
        return names
    return list(range(n))


def _floats(values):
    return [np.nan if figures.finite(v) is None else figures.finite(v) for v in values]


def render_generic(data, title, page=None):
    """Any JSON-like result: scalars -> a table, series -> curves, matrices and per-class
    columns -> tables (rows named by a sibling "names" list when there is one)."""
    page = page or _Page()
    flat = {}
    for key, value in _flatten(data):
        flat.setdefault(key or title, value)  # a bare list or number: named by the file
    scalars, parts = [], []
    for key, value in flat.items():
        if _is_columns(value):
            n = len(next(iter(value.values())))
            if n <= MAX_TABLE_ROWS and len(value) <= MAX_TABLE_COLUMNS:
                labels = _names_for(key, n, flat)
                parts.append(f"<h3>{_esc(key)}</h3>" + _table(
                    [[labels[i]] + [col[i] for col in value.values()] for i in range(n)],
                    header=[""] + list(value)))
            else:
                curves = {k: (list(range(n)), _floats(col))
                          for k, col in list(value.items())[:MAX_TABLE_COLUMNS]}
                parts.append(_plot(page, curves, key, title=key, xlabel="index"))
        elif _is_records(value):
            parts.append(_history_figures(value, page, f"{title}: {key}"))
        elif _is_matrix(value):
            rows, cols = len(value), len(value[0])
            if max(rows, cols) <= MAX_MATRIX:
                labels = _names_for(key, rows, flat)
                col_labels = labels if cols == rows else list(range(cols))
                parts.append(f"<h3>{_esc(key)}</h3>" +
                             _table([[labels[i]] + list(r) for i, r in enumerate(value)],
                                    header=[""] + list(col_labels)))
            else:
                scalars.append([key, f"matrix {rows} x {cols}"])
        elif _is_vector(value):
            ys = _floats(value)
            parts.append(_plot(page, {key: (list(range(1, len(ys) + 1)), ys)}, key, title=key,
                               xlabel="index"))
        else:
            scalars.append([key, value])
    out = []
    if scalars:
        out.append(_table(scalars[:MAX_ROWS], header=["key", "value"]))
        if len(scalars) > MAX_ROWS:
            out.append(_note(f"the first {MAX_ROWS} of {len(scalars)} values"))
    out.extend(p for p in parts if p)
    return "\n".join(out)


# --- sections ----------------------------------------------------------------------------------
def _history_figures(history, page, title="training"):
    """One figure per group of numeric series of a list of records."""
    series = figures.history_series(history)
    xlabel = figures.history_x_key(history) or "record"
    out = []
    for group, curves in figures.group_series(series):
        logy = False if group in ("accuracy", "learning rate") else None
        out.append(_plot(page, curves, f"{title}: {group}", title=group, xlabel=xlabel,
                         logy=logy))
    return "\n".join(o for o in out if o)


def _final_metrics(history):
    """Last value, min, max and the step of the last value of every numeric key."""
    series = figures.history_series(history)
    rows = []
    for key, (xs, ys) in list(series.items())[:MAX_ROWS]:
        rows.append([key, ys[-1], xs[-1], min(ys), max(ys)])
    at = f"at {figures.history_x_key(history) or 'record'}"
    return _table(rows, header=["metric", "last", at, "min", "max"]) if rows else ""


def _samples(history):
    records = [r for r in history if "sample" in r]
    if not records:
        return ""
    shown = records[-MAX_SAMPLES:]
    out = []
    if len(records) > len(shown):
        out.append(_note(f"the last {len(shown)} of {len(records)} samples"))
    for r in shown:
        text = r["sample"] if isinstance(r["sample"], str) else _fmt(r["sample"])
        out.append(f"<h3>step {_esc(_fmt(r.get('step', '?')))}</h3>"
                   f"<pre>{_esc(_cut(text, MAX_SAMPLE_CHARS))}</pre>")
    return "\n".join(out)


def _log_section(log, page):
    parts, shown = [], set()
    config = log.get("config")
    if isinstance(config, dict):
        rows = [[k, v] for k, v in _flatten(config)]
        parts.append(("config", "Configuration", _table(rows[:MAX_ROWS],
                                                         header=["setting", "value"])))
        shown.add("config")
    elif "config" in log:
        page.notes.append(f"log.json: 'config' is {_kind(config)}, not an object (shown with "
                          f"the other values)")
    history = log.get("history")
    if isinstance(history, list):
        shown.add("history")
        records = [r for r in history if isinstance(r, dict)]
        if len(records) < len(history):
            page.notes.append(f"log.json: {len(history) - len(records)} of the "
                              f"{len(history)} history records are not objects; left out")
        if records:
            curves = _history_figures(records, page)
            if curves:
                parts.append(("curves", "Training curves", curves))
            parts.append(("final", "Final metrics", _final_metrics(records)))
            samples = _samples(records)
            if samples:
                parts.append(("samples", "Generated samples", samples))
    elif "history" in log:
        page.notes.append(f"log.json: 'history' is {_kind(history)}, not a list of records "
                          f"(shown with the other values)")
    rest = {k: v for k, v in log.items() if k not in shown}
    if rest:
        parts.append(("log-other", "Other values in log.json", render_generic(rest, "log", page)))
    return parts


def _recorder_section(data, page):
    record, problems = clean_record(data)
    page.notes += [f"recorder.json: {p}" for p in problems[:20]]
    if len(problems) > 20:
        page.notes.append(f"recorder.json: {len(problems) - 20} more problems")
    if record is None:
        return _note("recorder.json holds no record")
    if not record["steps"]:
        return _note("the recorder has no recorded steps")
    out = [page.figure(lambda buf: figures.plot_gradient_flow(buf, record), "gradient flow"),
           page.figure(lambda buf: figures.plot_update_ratios(buf, record),
                       "update / weight ratio")]
    if any("mean" in s for s in record["activations"].values()):
        out.append(page.figure(lambda buf: figures.plot_activation_stats(buf, record),
                               "activation statistics"))
    for kind in ("activation", "gradient"):
        if figures.histograms_by_name(record, kind):
            out.append(page.figure(lambda buf, k=kind: figures.plot_histograms(buf, record, k),
                                   f"{kind} histograms"))
    rows = []
    for name, s in record["parameters"].items():
        rows.append([name] + [s[k][-1] for k in ("grad_norm", "param_norm", "update_ratio")])
    out.append(f'<h3>parameters at the last recorded step ({_esc(_fmt(record["steps"][-1]))})'
               f'</h3>' + _table(rows, header=["parameter", "grad norm", "param norm",
                                                "update / weight"]))
    return "\n".join(o for o in out if o)


def _model_section(path):
    """The model's class, configuration and a table of its arrays (shape, dtype, norm).
    The header comes from ``checkpoint.read_header`` (bounded and checked); the arrays'
    shapes from their ``.npy`` headers, and only float arrays within ``MAX_NORM_BYTES``
    are read, for their norms."""
    from .. import checkpoint
    from ..npzfile import NpzReader
    try:
        header = checkpoint.read_header(path, follow_symlinks=False)
        with NpzReader(path, follow_symlinks=False) as npz:
            rows, total, notes = _member_rows(npz)
    except (CheckpointError, FileError) as exc:
        return f'<p class="error">{_esc(exc)}</p>'
    header = header if isinstance(header, dict) else {}
    meta = header.get("meta") if isinstance(header.get("meta"), dict) else {}
    info = [["class", header.get("class", "?")]]
    if isinstance(meta.get("model"), dict):
        info += [[f"model.{k}", v] for k, v in list(meta["model"].items())[:MAX_ROWS]]
    out = [_table(info, header=["", ""]),
           f"<p>{total:,} floating-point values in the state (parameters and buffers)</p>",
           _table(rows, header=["name", "shape", "size", "dtype", "norm"])]
    out += [_note(n) for n in notes]
    return "\n".join(out)


def _member_rows(npz):
    """(rows, floating-point values, notes) of the ``model/`` members of a checkpoint."""
    names = [n for n in npz.names() if n.startswith("model/")]
    rows, total, budget, notes, unmeasured = [], 0, MAX_NORM_BYTES, [], 0
    for name in names[:MAX_MEMBERS]:
        label = name[len("model/"):]
        try:
            h = npz.header(name)
        except CheckpointError as exc:
            rows.append([label, "?", "?", "?", f"unreadable: {exc}"])
            continue
        norm = None
        if h.dtype.kind == "f":
            total += h.size
            if h.nbytes <= budget:
                budget -= h.nbytes
                try:
                    values = npz.read(name, kinds="f").astype(np.float64).ravel()
                    norm = float(np.linalg.norm(values))
                except CheckpointError as exc:
                    norm = f"unreadable: {exc}"
            else:
                unmeasured += 1
        rows.append([label, str(h.shape), h.size, str(h.dtype), norm])
    if len(names) > MAX_MEMBERS:
        notes.append(f"the first {MAX_MEMBERS} of {len(names)} arrays")
    if unmeasured:
        notes.append(f"{unmeasured} arrays have no norm: only the first "
                     f"{MAX_NORM_BYTES // 2**20} MB of arrays are read")
    return rows, total, notes


def _transformer_checkpoint(run, names):
    """The checkpoint to draw attention maps from ("best.npz", else "model.npz") when the
    run is a transformer language model, else None. The checkpoint's header says so (read
    bounded, as ``_model_section`` does); a header that cannot be read counts as not."""
    from .. import checkpoint
    for name in ("best.npz", "model.npz"):
        if name not in names:
            continue
        try:
            meta = checkpoint.read_meta(fileio.run_file(run, name), follow_symlinks=False)
        except (CheckpointError, FileError):
            continue
        meta = meta if isinstance(meta, dict) else {}
        model = meta.get("model")
        if meta.get("kind") == "language_model" and isinstance(model, dict) and \
                model.get("backbone") == "transformer":
            return name
    return None


def _log_says_transformer(page):
    config = page.log.get("config") if page.log is not None else None
    return isinstance(config, dict) and config.get("backbone") == "transformer"


def _attention_section(run, names, page, prompt=None):
    """Heat maps of every layer's and head's attention for one prompt (``attention.py``):
    ``prompt``, else the run's configured prompt, else the first training sample, else a
    fixed text; at most the model's context and ``MAX_ATTENTION_TOKENS`` tokens. None when
    the run is not a transformer language model (by its checkpoint's header or its
    log.json); one error line when its model cannot be loaded or run."""
    name = _transformer_checkpoint(run, names)
    if name is None:
        if not _log_says_transformer(page):
            return None
        name = "best.npz" if "best.npz" in names else "model.npz"
    try:
        fileio.run_file(run, name)  # a regular file, not a symlink, before anything opens it
        from ..train.lm import load_run
        model, tokenizer, meta = load_run(run, which="best" if name == "best.npz" else "last")
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        history = page.log.get("history") if page.log is not None else None
        samples = [r.get("sample") for r in history if isinstance(r, dict)] \
            if isinstance(history, list) else []
        context = int(getattr(model, "context", MAX_ATTENTION_TOKENS))
        limit = min(context, MAX_ATTENTION_TOKENS)
        ids, where = attention.prompt_ids(
            tokenizer, prompt or config.get("prompt", ""), samples, limit=limit,
            prompt_is="the given prompt" if prompt else "the run's prompt")
        maps = attention.attention_maps(model, ids)
        tokens = [tokenizer.itos[i] for i in ids.tolist()]
    except Exception as exc:  # noqa: BLE001 (a file anyone could have written: one line)
        return (f'<p class="error">attention maps of {_esc(name)}: {_esc(type(exc).__name__)}: '
                f'{_esc(_cut(str(exc), 300))}</p>')
    num_layers, num_heads = len(maps), maps[0].shape[0]
    out = [_note(f"{len(ids)} tokens of {where} (at most {limit}: the context "
                 f"{context}, the page's limit {MAX_ATTENTION_TOKENS}), from {name}; query "
                 f"on the y axis, key on the x axis"),
           f"<pre>{_esc(_cut(tokenizer.decode(ids), MAX_SAMPLE_CHARS))}</pre>"]
    heads = list(range(min(num_heads, MAX_ATTENTION_HEADS)))
    for layer in range(min(num_layers, MAX_ATTENTION_LAYERS)):
        for start in range(0, len(heads), HEADS_PER_FIGURE):
            chunk = heads[start:start + HEADS_PER_FIGURE]
            caption = f"layer {layer}, heads {chunk[0]}-{chunk[-1]}"
            out.append(page.figure(
                lambda buf, l=layer, c=chunk: attention.plot_attention(
                    buf, maps, tokens, layers=[l], heads=c, title=f"attention, layer {l}"),
                caption))
    def span(what, first, last):
        return f"{what} {first}" if first == last else f"{what}s {first}-{last}"
    left = []
    if num_layers > MAX_ATTENTION_LAYERS:
        left.append(span("layer", MAX_ATTENTION_LAYERS, num_layers - 1))
    if num_heads > MAX_ATTENTION_HEADS:
        left.append(span("head", MAX_ATTENTION_HEADS, num_heads - 1) + " of every layer")
    if left:
        out.append(_note(f"{num_layers} layers x {num_heads} heads; not drawn: "
                         f"{', '.join(left)}"))
    return "\n".join(o for o in out if o)


def _images_section(run, names, page):
    """The folder's PNGs, embedded (regular files with a PNG signature, within the caps)."""
    images, used = [], 0
    pngs = [n for n in names if n.lower().endswith(".png")]
    for name in pngs[:MAX_PNGS]:
        path = _run_path(run, name, page)
        if path is None:
            continue
        try:
            data = fileio.read_bytes(path, MAX_PNG_BYTES, follow_symlinks=False, what=name)
        except FileError as exc:
            page.notes.append(f"{name} was not embedded: {exc}")
            continue
        if not data.startswith(PNG):
            page.notes.append(f"{name} was not embedded: it is not a PNG image")
            continue
        if used + len(data) > MAX_PNG_TOTAL:
            page.notes.append(f"{name} was not embedded: the page already holds "
                              f"{MAX_PNG_TOTAL // 2**20} MB of images")
            continue
        used += len(data)
        images.append(_img(data, name))
    if len(pngs) > MAX_PNGS:
        page.notes.append(f"only the first {MAX_PNGS} of {len(pngs)} PNG files are embedded")
    return "\n".join(images)


def _describe_entry(path):
    """(size or None, what it is) of a folder entry, from lstat: nothing is followed."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return st.st_size, "file"
    if stat.S_ISLNK(mode):
        return None, "symlink (not followed)"
    if stat.S_ISDIR(mode):
        return None, "folder"
    if stat.S_ISFIFO(mode):
        return None, "FIFO (not read)"
    return None, "special file (not read)"


def _files_section(folder, names):
    rows = []
    for name in names[:MAX_FILES]:
        size, what = _describe_entry(os.path.join(folder, name))
        rows.append([name, what, size if size is not None else ""])
    out = _table(rows, header=["name", "kind", "bytes"])
    if len(names) > MAX_FILES:
        out += _note(f"the first {MAX_FILES} of {len(names)} entries")
    return out


# --- the page ----------------------------------------------------------------------------------
def _list_folder(run):
    if not os.path.isdir(run):
        raise CheckpointError(f"{run!r} is not a folder (expected a run folder of tinyar train "
                              f"or classify, with log.json, model.npz, ...)")
    try:
        return sorted(os.listdir(run))
    except OSError as exc:
        raise FileError(f"cannot list the run folder {run!r}: {exc.strerror or exc}") from None


def _json_sections(run, names, page):
    sections = []
    if "log.json" in names:
        log = _read_json(run, "log.json", page)
        if isinstance(log, dict):
            page.log = log
            sections += _log_section(log, page)
        elif log is not _ABSENT:
            sections.append(("log", "log.json", render_generic({"log": log}, "log", page)))
    if "metrics.json" in names:
        metrics = _read_json(run, "metrics.json", page)
        if metrics is not _ABSENT:
            sections.append(("metrics", "Metrics", render_generic(metrics, "metrics", page)))
    if "recorder.json" in names:
        record = _read_json(run, "recorder.json", page)
        if record is not _ABSENT:
            sections.append(("recorder", "Inside training (recorder)",
                             _recorder_section(record, page)))
    others = [n for n in names if n.endswith(".json") and n not in
              ("log.json", "metrics.json", "recorder.json") + SKIP_JSON]
    for i, name in enumerate(others[:MAX_OTHER_JSON]):
        size, what = _describe_entry(os.path.join(run, name))
        if what == "file" and size > MAX_OTHER_JSON_BYTES:
            continue  # listed with its size in the file table
        data = _read_json(run, name, page, MAX_OTHER_JSON_BYTES)
        if data is not _ABSENT:
            sections.append((f"json-{i}", name, render_generic(data, name, page)))
    return sections


def build_report(run, prompt=None):
    """The HTML text of the report on the run folder ``run``; ``prompt``: the text whose
    attention maps a transformer's page shows (default: see ``_attention_section``)."""
    names = _list_folder(run)
    page = _Page()
    sections = _json_sections(run, names, page)
    if "model.npz" in names:
        path = _run_path(run, "model.npz", page)
        if path is not None:
            sections.append(("model", "Model", _model_section(path)))
    maps = _attention_section(run, names, page, prompt)
    if maps is not None:
        sections.append(("attention", "Attention", maps))
    images = _images_section(run, names, page)
    if images:
        sections.append(("images", "Figures in the folder", images))
    sections.append(("files", "Files", _files_section(run, names)))
    if page.skipped_figures:
        page.notes.append(f"{page.skipped_figures} more figures were not drawn (at most "
                          f"{MAX_FIGURES} on a page)")

    title = f"tinyar run: {os.path.basename(os.path.abspath(run))}"
    nav = " ".join(f'<a href="#{_esc(anchor)}">{_esc(head)}</a>' for anchor, head, _ in sections)
    body = [f"<h1>{_esc(title)}</h1>",
            f'<p class="note">{_esc(os.path.abspath(run))}</p>', f"<nav>{nav}</nav>"]
    body += [_note(n, "error") for n in page.notes]
    for anchor, head, content in sections:
        body.append(f'<h2 id="{_esc(anchor)}">{_esc(head)}</h2>\n{content}')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n" +
            "\n".join(body) + "\n</body>\n</html>\n")


def write_report(run, out=None, prompt=None):
    """Write the report of run folder ``run`` to ``out`` (default RUN/report.html), atomically;
    returns the path. ``prompt``: see ``build_report``."""
    text = build_report(run, prompt)
    path = out or os.path.join(run, "report.html")
    return fileio.write_text(path, text)
