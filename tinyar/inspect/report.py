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
    *.png          embedded as they are (loss curve, confusion matrices, ...)
"""
import base64
import html
import io
import json
import math
import os

import numpy as np

from . import figures
from ..errors import CheckpointError

#: JSON files that are data, not results (shown only in the file list).
SKIP_JSON = ("vocab.json", "hierarchy.json")
MAX_MATRIX = 40  # larger numeric matrices are summarised, not tabulated
MAX_TABLE_ROWS = 100  # longer per-class columns become curves
MAX_SAMPLES = 8

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
    return html.escape(str(value))


def _fmt(value):
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.4e}"
        return f"{v:.6g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value)
        return text if len(text) <= 200 else text[:200] + " ..."
    text = str(value)
    return text if len(text) <= 300 else text[:300] + " ..."


def _table(rows, header=None):
    """rows: lists of cells; numbers are right-aligned."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            num = isinstance(cell, (int, float, np.integer, np.floating)) and \
                not isinstance(cell, bool)
            cls = ' class="num"' if num else ""
            cells.append(f"<td{cls}>{_esc(_fmt(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _img(png_bytes, caption="", alt=""):
    data = base64.b64encode(png_bytes).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return (f'<figure><img alt="{_esc(alt or caption)}" src="data:image/png;base64,{data}">'
            f"{cap}</figure>")


def _figure(draw, caption=""):
    """Run a figures.* call into memory and embed it; a failure becomes a visible note."""
    buffer = io.BytesIO()
    try:
        draw(buffer)
    except Exception as exc:  # one bad figure must not cost the whole report
        return f'<p class="error">figure "{_esc(caption)}" failed: {_esc(type(exc).__name__)}: ' \
               f'{_esc(exc)}</p>'
    return _img(buffer.getvalue(), caption)


def _is_number(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as exc:
        return None, f"{os.path.basename(path)} could not be read: {exc}"


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
                                                     (isinstance(r, list) and len(r) == 1)
                                                     for r in value) and \
        len({len(r) for r in value}) == 1


def _names_for(key, n, flat):
    """Labels for the rows of a table: a sibling "names" list of n strings, if any."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    names = flat.get(f"{parent}.names" if parent else "names")
    if isinstance(names, list) and len(names) == n and all(isinstance(v, str) for v in names):
        return names
    return list(range(n))


def render_generic(data, title):
    """Any JSON-like result: scalars -> a table, series -> curves, matrices and per-class
    columns -> tables (rows named by a sibling "names" list when there is one)."""
    flat = dict(_flatten(data))
    scalars, parts = [], []
    for key, value in flat.items():
        if _is_columns(value):
            n = len(next(iter(value.values())))
            if n <= MAX_TABLE_ROWS:
                labels = _names_for(key, n, flat)
                parts.append(f"<h3>{_esc(key)}</h3>" + _table(
                    [[labels[i]] + [col[i] for col in value.values()] for i in range(n)],
                    header=[""] + list(value)))
            else:
                curves = {k: (list(range(n)), [np.nan if v is None else v for v in col])
                          for k, col in value.items()}
                parts.append(_figure(lambda buf, k=key, c=curves: figures.plot_series(
                    buf, c, title=k, xlabel="index"), key))
        elif _is_records(value):
            parts.append(_history_figures(value, f"{title}: {key}"))
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
            ys = [np.nan if v is None else float(v) for v in value]
            parts.append(_figure(lambda buf, k=key, ys=ys: figures.plot_series(
                buf, {k: (list(range(1, len(ys) + 1)), ys)}, title=k, xlabel="index"), key))
        else:
            scalars.append([key, value])
    out = []
    if scalars:
        out.append(_table(scalars, header=["key", "value"]))
    out.extend(parts)
    return "\n".join(out)


# --- sections ----------------------------------------------------------------------------------
def _history_figures(history, title="training"):
    """One figure per group of numeric series of a list of records."""
    series = figures.history_series(history)
    xlabel = figures.history_x_key(history) or "record"
    out = []
    for group, curves in figures.group_series(series):
        logy = False if group in ("accuracy", "learning rate") else None
        out.append(_figure(lambda buf, g=group, c=curves, lg=logy: figures.plot_series(
            buf, c, title=g, xlabel=xlabel, logy=lg), f"{title}: {group}"))
    return "\n".join(out)


def _final_metrics(history):
    """Last value, min, max and the step of the last value of every numeric key."""
    series = figures.history_series(history)
    rows = []
    for key, (xs, ys) in series.items():
        rows.append([key, ys[-1], xs[-1], min(ys), max(ys)])
    at = f"at {figures.history_x_key(history) or 'record'}"
    return _table(rows, header=["metric", "last", at, "min", "max"]) if rows else ""


def _samples(history):
    records = [r for r in history if isinstance(r, dict) and "sample" in r]
    if not records:
        return ""
    shown = records[-MAX_SAMPLES:]
    out = []
    if len(records) > len(shown):
        out.append(f'<p class="note">the last {len(shown)} of {len(records)} samples</p>')
    for r in shown:
        out.append(f"<h3>step {_esc(r.get('step', '?'))}</h3><pre>{_esc(r['sample'])}</pre>")
    return "\n".join(out)


def _log_section(log):
    parts = []
    if isinstance(log.get("config"), dict):
        rows = [[k, v] for k, v in _flatten(log["config"])]
        parts.append(("config", "Configuration", _table(rows, header=["setting", "value"])))
    history = log.get("history")
    if isinstance(history, list) and history:
        curves = _history_figures(history)
        if curves:
            parts.append(("curves", "Training curves", curves))
        parts.append(("final", "Final metrics", _final_metrics(history)))
        samples = _samples(history)
        if samples:
            parts.append(("samples", "Generated samples", samples))
    rest = {k: v for k, v in log.items() if k not in ("config", "history")}
    if rest:
        parts.append(("log-other", "Other values in log.json", render_generic(rest, "log")))
    return parts


def _recorder_section(record):
    out = []
    if record.get("steps"):
        out.append(_figure(lambda buf: figures.plot_gradient_flow(buf, record), "gradient flow"))
        out.append(_figure(lambda buf: figures.plot_update_ratios(buf, record),
                           "update / weight ratio"))
        if any("mean" in s for s in record.get("activations", {}).values()):
            out.append(_figure(lambda buf: figures.plot_activation_stats(buf, record),
                               "activation statistics"))
        for kind in ("activation", "gradient"):
            if figures.histograms_by_name(record, kind):
                out.append(_figure(lambda buf, k=kind: figures.plot_histograms(buf, record, k),
                                   f"{kind} histograms"))
        rows = []
        for name, s in record["parameters"].items():
            last = [(s.get(k) or [None])[-1] for k in ("grad_norm", "param_norm", "update_ratio")]
            rows.append([name] + last)
        out.append(f'<h3>parameters at the last recorded step ({record["steps"][-1]})</h3>' +
                   _table(rows, header=["parameter", "grad norm", "param norm",
                                        "update / weight"]))
    else:
        out.append('<p class="note">the recorder has no recorded steps</p>')
    return "\n".join(out)


def _model_section(path):
    from .. import checkpoint
    try:
        arrays, header = checkpoint.read(path)
    except CheckpointError as exc:
        return f'<p class="error">{_esc(exc)}</p>'
    out = []
    meta = header.get("meta") or {}
    info = [["class", header.get("class", "?")]]
    if isinstance(meta.get("model"), dict):
        info += [[f"model.{k}", v] for k, v in meta["model"].items()]
    out.append(_table(info, header=["", ""]))
    rows, total = [], 0
    for key, value in arrays.items():
        if not key.startswith("model/"):
            continue
        size = int(value.size)
        is_float = np.issubdtype(value.dtype, np.floating)
        norm = float(np.linalg.norm(value.astype(np.float64).ravel())) if is_float else None
        rows.append([key[len("model/"):], str(tuple(value.shape)), size, str(value.dtype), norm])
        total += size if is_float else 0
    out.append(f"<p>{total:,} floating-point values in the state (parameters and buffers)</p>")
    out.append(_table(rows, header=["name", "shape", "size", "dtype", "norm"]))
    return "\n".join(out)


def _files_section(folder, names):
    rows = []
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            rows.append([name, os.path.getsize(path)])
    return _table(rows, header=["file", "bytes"])


# --- the page ----------------------------------------------------------------------------------
def build_report(run):
    """The HTML text of the report on the run folder ``run``."""
    if not os.path.isdir(run):
        raise CheckpointError(f"{run!r} is not a folder (expected a run folder of tinyar train "
                              f"or classify, with log.json, model.npz, ...)")
    names = sorted(os.listdir(run))
    sections, notes = [], []

    if "log.json" in names:
        log, error = _read_json(os.path.join(run, "log.json"))
        if error:
            notes.append(error)
        elif isinstance(log, dict):
            sections += _log_section(log)
        else:
            sections.append(("log", "log.json", render_generic({"log": log}, "log")))
    if "metrics.json" in names:
        metrics, error = _read_json(os.path.join(run, "metrics.json"))
        if error:
            notes.append(error)
        else:
            sections.append(("metrics", "Metrics", render_generic(metrics, "metrics")))
    if "recorder.json" in names:
        record, error = _read_json(os.path.join(run, "recorder.json"))
        if error:
            notes.append(error)
        else:
            sections.append(("recorder", "Inside training (recorder)", _recorder_section(record)))
    others = [n for n in names if n.endswith(".json") and n not in
              ("log.json", "metrics.json", "recorder.json") + SKIP_JSON]
    for name in others:
        data, error = _read_json(os.path.join(run, name))
        if error:
            notes.append(error)
        elif os.path.getsize(os.path.join(run, name)) < 200_000:
            sections.append((name.replace(".", "-"), name, render_generic(data, name)))
    if "model.npz" in names:
        sections.append(("model", "Model", _model_section(os.path.join(run, "model.npz"))))
    pngs = [n for n in names if n.lower().endswith(".png")]
    if pngs:
        images = []
        for name in pngs:
            with open(os.path.join(run, name), "rb") as f:
                images.append(_img(f.read(), name))
        sections.append(("images", "Figures in the folder", "\n".join(images)))
    sections.append(("files", "Files", _files_section(run, names)))

    title = f"tinyar run: {os.path.basename(os.path.abspath(run))}"
    nav = " ".join(f'<a href="#{_esc(anchor)}">{_esc(head)}</a>' for anchor, head, _ in sections)
    body = [f"<h1>{_esc(title)}</h1>",
            f'<p class="note">{_esc(os.path.abspath(run))}</p>', f"<nav>{nav}</nav>"]
    body += [f'<p class="error">{_esc(n)}</p>' for n in notes]
    for anchor, head, content in sections:
        body.append(f'<h2 id="{_esc(anchor)}">{_esc(head)}</h2>\n{content}')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n" +
            "\n".join(body) + "\n</body>\n</html>\n")


def write_report(run, out=None):
    """Write the report of run folder ``run`` to ``out`` (default RUN/report.html); returns
    the path."""
    text = build_report(run)
    path = out or os.path.join(run, "report.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
