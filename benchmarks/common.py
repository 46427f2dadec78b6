"""Shared by the benchmarks: timing by median after warm-up, machine info,
and a Markdown table to paste into RESULTS.md."""
import os
import platform
import statistics
import sys
import time


def step_times(step, warmup=10, repeats=100):
    """The wall times (s) of ``repeats`` calls of ``step()``, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def median_ms(step, warmup=10, repeats=100):
    """Median wall time of ``step()`` in milliseconds, after ``warmup`` calls."""
    return statistics.median(step_times(step, warmup, repeats)) * 1e3


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba
    import numpy
    from tinyar.backend.cpu import blas
    parts = [f"{cpu}, {os.cpu_count()} cores", f"Python {platform.python_version()}",
             f"numpy {numpy.__version__}", f"numba {numba.__version__}", blas.describe()]
    try:
        import torch
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        pass
    return "; ".join(parts)


def torch_or_none():
    try:
        import torch
        return torch
    except ImportError:
        print("torch is not installed: timing tinyar alone (pip install -e .[compare] "
              "for the side-by-side figures)", file=sys.stderr)
        return None


def table(title, rows, reference="tinyar"):
    """rows: [(name, median_ms), ...]; the ratio column is tinyar's time / each row's."""
    base = dict(rows)[reference]
    lines = [f"### {title}", "", f"machine: {machine()}", "",
             "| implementation | median step (ms) | tinyar / this |", "|---|---:|---:|"]
    for name, ms in rows:
        lines.append(f"| {name} | {ms:.3f} | {base / ms:.2f} |")
    return "\n".join(lines)
