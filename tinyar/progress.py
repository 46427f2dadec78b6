"""A progress bar for long work: percent, rate, ETA and the latest metrics.

On a terminal the bar redraws in place; in a log (CI, a file) it prints a
line at every 10 % so the log stays short. No dependency: tqdm would do, but
this is twenty lines and shows learners there is no magic.

The bar is never a reason for training to fail: if its stream breaks (a closed
pipe, ``tinyar train 2>&1 | head``, a full disk under a redirected log), it
goes quiet and the run goes on.
"""
import sys
import time


def _fmt_time(seconds):
    seconds = int(max(seconds, 0))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """``bar = ProgressBar(total, "train"); bar.update(1, loss=0.3); bar.close()``.

    ``unit`` names what is counted (steps, tokens); ``rate_scale`` converts one
    update unit into another for the rate display (e.g. tokens per step).
    ``initial`` is where a resumed run starts counting: the bar shows it done,
    and the rate and the ETA count only the work of this process.
    """

    def __init__(self, total, desc="", unit="it", file=None, width=24, rate_unit=None,
                 rate_scale=1.0, disable=False, initial=0):
        # total=None: a count with a rate but no percentage or ETA
        total = int(total) if total else None
        self.total = total if total is None or total > 0 else None
        self.desc, self.unit = desc, unit
        self.file = file or sys.stderr
        self.width = width
        self.rate_unit, self.rate_scale = rate_unit or unit, rate_scale
        self.initial = int(initial)
        self.count, self.metrics = self.initial, {}
        self.start = time.perf_counter()
        try:
            self.tty = bool(self.file.isatty())
        except (AttributeError, OSError, ValueError):  # no stream, or a closed one
            self.tty = False
        self.disable = disable or self.file is None
        self._last_draw, self._last_decile = 0.0, -1

    def update(self, n=1, **metrics):
        self.count += n
        self.metrics.update(metrics)
        now = time.perf_counter()
        if self.tty:
            if now - self._last_draw > 0.1 or (self.total and self.count >= self.total):
                self._draw(now)
        elif self.total:
            decile = self.count * 10 // self.total
            if decile != self._last_decile:
                self._last_decile = decile
                self._draw(now)

    def line(self, now=None):
        now = now or time.perf_counter()
        elapsed = now - self.start
        done_here = self.count - self.initial
        rate = done_here * self.rate_scale / elapsed if elapsed > 0 else 0.0
        metrics = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in self.metrics.items())
        if not self.total:
            return (f"{self.desc} {self.count:,} {self.unit} [{_fmt_time(elapsed)}, "
                    f"{rate:,.1f} {self.rate_unit}/s] {metrics}").rstrip()
        frac = min(self.count / self.total, 1.0) if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        eta = (self.total - self.count) * elapsed / done_here if done_here > 0 else 0.0
        return (f"{self.desc} {frac * 100:3.0f}% |{bar}| {self.count}/{self.total} "
                f"[{_fmt_time(elapsed)}<{_fmt_time(eta)}, {rate:,.1f} {self.rate_unit}/s] "
                f"{metrics}").rstrip()

    def _emit(self, text):
        """Write to the stream; a stream that fails silences the bar, not the run."""
        try:
            self.file.write(text)
            self.file.flush()
        except (AttributeError, OSError, ValueError):  # a broken pipe, a closed file, a full disk
            self.disable = True

    def _draw(self, now):
        if self.disable:
            return
        self._last_draw = now
        end = "\r" if self.tty else "\n"
        self._emit(self.line(now).ljust(100 if self.tty else 0) + end)

    def write(self, message):
        """Print a message above the bar (validation results, samples)."""
        if self.disable:
            return
        self._emit(("\r" + " " * 110 + "\r" if self.tty else "") + message + "\n")

    def close(self):
        if self.disable:
            return
        if not self.total and not self.tty:
            self._draw(time.perf_counter())
        elif self.tty:
            self._draw(time.perf_counter())
            if not self.disable:
                self._emit("\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
