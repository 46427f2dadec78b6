"""Start-up: time from a fresh Python process to the end of its first training step.

    python benchmarks/bench_startup.py

Kernels are compiled with ``cache=True``, so the first process pays the
compilation and writes the cache; later processes load compiled code from
disk. This runs the same script in three fresh processes and reports each
one's time to the first finished step (goal: the second under 3 s on a
2-core machine).
"""
import os
import subprocess
import sys
import time

SCRIPT = r"""
import time
t0 = time.perf_counter()
import numpy as np
import tinyar
from tinyar import nn
from tinyar.nn.loss import CrossEntropyLoss
from tinyar.optim import Adam
model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
criterion = CrossEntropyLoss()
opt = Adam(model.parameters())
x = np.random.default_rng(0).standard_normal((128, 784)).astype(np.float32)
y = np.random.default_rng(0).integers(0, 10, 128)
loss = criterion(model(x), y)
model.backward(criterion.backward())
opt.step()
print(time.perf_counter() - t0)
"""


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import machine
    print(f"machine: {machine()}")
    print("| process | wall time to first step incl. interpreter start (s) | in-script (s) |")
    print("|---|---:|---:|")
    import tempfile
    cache = tempfile.mkdtemp(prefix="tinyar-cache-")  # an empty kernel cache: run 1 compiles
    env = dict(os.environ, TINYAR_CACHE=cache)
    env.pop("NUMBA_CACHE_DIR", None)
    for i in range(3):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                             check=True, env=env)
        wall = time.perf_counter() - start
        label = "first (empty cache: compiles)" if i == 0 else f"run {i + 1} (cached)"
        print(f"| {label} | {wall:.2f} | {float(out.stdout.strip()):.2f} |")


if __name__ == "__main__":
    main()
