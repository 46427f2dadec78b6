"""Data parallelism on one machine: the gradient all-reduce against a memory copy, and the
training step of one process with two threads against two processes with one thread each.

    python benchmarks/bench_distributed.py [--part all|allreduce|steps|cli] [--rounds 3]
        [--repeats 20] [--warmup 5] [--sizes-max 64M] [--cores 2] [--mpiexec PATH]

It starts its own runs (``mpiexec -n 2 python benchmarks/bench_distributed.py --worker ...``
and the same without ``mpiexec`` for one process), each writing its timings as JSON into a
temporary folder, and prints Markdown tables like the other benchmarks. It needs the
``distributed`` extra (``pip install -e ".[distributed]"``: mpi4py and MPICH).

1. **All-reduce against memcpy.** ``comm.Allreduce(MPI.IN_PLACE, buffer, op=SUM)`` over two
   ranks, float32 buffers of S = 4 KB .. ``--sizes-max`` bytes: the time of one call (each
   call's slowest rank; median after warm-up, every call between two barriers), next to
   ``np.copyto`` of the same S bytes in one process. Columns:

   * algorithmic bandwidth ``algbw = S / t`` (nccl-tests' name), and bus bandwidth
     ``busbw = algbw * 2(N-1)/N``, the bytes each rank actually sends per second in a ring;
   * the ring all-reduce's cost model, ``t_ring = 2(N-1)/N * S / B`` with B the *measured
     memcpy bandwidth* (S / memcpy time): every rank sends and receives 2(N-1)/N * S bytes
     (N-1 steps of reduce-scatter, N-1 of all-gather, S/N bytes each), and between two
     processes on one machine "sending" is a copy through shared memory. The latency term
     (2(N-1) messages) is left out, so small buffers sit above the line. At N = 2 the
     prediction is exactly one memcpy of S.

2. **Step time.** The word LM of ``bench_word_lm.py`` (V = 10,000, embedding 256, LSTM 256,
   multi-level softmax with 100 classes, batch 32 x 35 steps, Adam) and LeNet of
   ``bench_lenet.py`` (batch 64, SGD momentum 0.9), at the same global batch as:

   * 1 process x ``--cores`` threads (BLAS and Numba), the whole batch: the baseline;
   * 1 process x ``--cores``/2 threads, half the batch: one rank's compute with no
     communication, what a rank of the 2-process run would take on a machine to itself;
   * 2 processes x ``--cores``/2 threads (``configure_threads``), each its rows of the
     batch (``rank_rows``), gradients averaged by ``GradientAverager`` in ``blocking``
     mode (one ``Allreduce`` after backward) and in ``bucketed`` mode (an ``Iallreduce``
     per bucket as soon as its layers' backward is done).

   The training loop is the library's, written out: ``model.loss``, ``zero_grad``,
   ``averager.begin()``, ``backward``, ``averager.finish()``, ``optimizer.step()``; the loss
   is not all-reduced every step (a real loop reduces it when it logs). Columns:

   * **scaling efficiency** = (1-process step time at the global batch) / (this step
     time): above 100 % the two processes beat one process using the same cores;
   * **per-rank efficiency** = (half-batch step alone) / (this step time): the share of a
     rank's step that is its own compute, the rest being the all-reduce and the two
     processes' contention for memory bandwidth. This is the definition behind Horovod's
     published 90 % (ResNet-101 on 512 GPUs, Sergeev & Del Balso 2018, "Horovod: fast and
     easy distributed deep learning in TensorFlow"): throughput of N workers over N times
     one worker's, shown as the reference line of each table.

3. **The command line** (``--part cli``, not in ``all``): the whole ``tinyar classify`` run,
   LeNet on ``CLI_IMAGES`` glyphs for ``CLI_EPOCHS`` epochs at a global batch of 64, as
   ``tinyar classify --batch 64 --threads 2`` against ``mpiexec -n 2 tinyar classify --batch
   32`` (a thread each), alternating, ``--rounds`` times. Columns: the command's wall time
   (imports, rendering the glyphs, training, evaluation, writing the run folder), the
   training time the run records (``train_seconds`` of ``metrics.json``: the epochs' steps
   and the evaluation between them, split over the ranks), and the final test accuracy.
   LeNet has no BatchNorm, so two ranks train what one process does, up to float32
   rounding: a mean of two half-batch gradients is not rounded as the whole batch's mean
   is, and over hundreds of Adam steps the two runs drift apart by a few test images (the
   tests check the first steps: float32 within tolerance, float64 tightly).

Timing: ``--rounds`` rounds; in each, every run is launched once (the one-process run, then
the two-process run, per model), and inside a run its configurations alternate. Each
configuration's figure is the median over the rounds of the per-run median of ``--repeats``
steps after ``--warmup``. A launch costs a few seconds (imports, the kernel cache): the
default settings take about 3 minutes on a 2-core machine. Benchmark only on a quiet
machine: two ranks on two cores leave nothing for anything else.
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import machine, step_times  # noqa: E402

RANKS = 2
#: Horovod's published scaling efficiency (Sergeev & Del Balso 2018): ResNet-101, 512 GPUs.
HOROVOD_EFFICIENCY = 0.90
LM_V, LM_EMBED, LM_HIDDEN, LM_BATCH, LM_STEPS, LM_CLASSES = 10_000, 256, 256, 32, 35, 100
LENET_BATCH = 64
MODELS = ("lm", "lenet")
MODEL_TITLES = {
    "lm": f"word LM step: V={LM_V:,}, embedding {LM_EMBED}, LSTM {LM_HIDDEN}, multi-level "
          f"softmax ({LM_CLASSES} classes), global batch {LM_BATCH} x {LM_STEPS} steps, Adam",
    "lenet": f"LeNet-like step: global batch {LENET_BATCH}, 1x28x28, SGD momentum 0.9"}
GLOBAL_BATCH = {"lm": LM_BATCH, "lenet": LENET_BATCH}


# --- helpers shared by the launcher and the workers ------------------------------------------
def parse_bytes(text):
    """``"64M"`` -> 67108864: a byte count with an optional K/M/G suffix (powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    body, unit = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units \
        else (text, 1)
    if not body.isdigit() or int(body) * unit < 4 or int(body) * unit % 4:
        raise argparse.ArgumentTypeError(f"expected a byte count of whole float32 values "
                                         f"(a multiple of 4) like 4096, 64K or 64M, got "
                                         f"{text!r}")
    return int(body) * unit


def human_bytes(n):
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def buffer_sizes(largest):
    """4 KB, 16 KB, 64 KB, ... up to ``largest`` bytes (and ``largest`` itself)."""
    sizes, size = [], 4 << 10
    while size < largest:
        sizes.append(size)
        size *= 4
    return sizes + [largest]


def write_result(path, obj):
    from tinyar.fileio import write_json
    write_json(path, obj)


# --- worker: the all-reduce ------------------------------------------------------------------
def allreduce_worker(args):
    """Under ``mpiexec -n 2``: one Allreduce per call on float32 buffers of each size; rank
    0 writes {size: [per-call seconds of the slowest rank]} to ``args.result``."""
    from tinyar.distributed import abort_on_exception, world
    w = world()  # imports mpi4py, or says how to install it
    from mpi4py import MPI
    with abort_on_exception(w):
        if w.size != RANKS:
            raise RuntimeError(f"bench_distributed --worker allreduce: expected {RANKS} ranks "
                               f"(mpiexec -n {RANKS}), got {w.size}")
        comm, timings = w.comm, {}
        for size in buffer_sizes(args.sizes_max):
            # zeros stay zeros when summed: no overflow, no denormals over many calls
            buffer = np.zeros(size // 4, np.float32)

            def one_call():
                comm.Barrier()
                start = time.perf_counter()
                comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
                return time.perf_counter() - start
            for _ in range(args.warmup):
                one_call()
            # as many calls as fit in ~2 s (at least 5), so that 64 MB does not take minutes
            first = comm.allreduce(one_call(), op=MPI.MAX)
            calls = max(5, min(args.repeats, int(2.0 / max(first, 1e-9))))
            # each call's time on the slower rank: an all-reduce of the times with MAX, which
            # every rank makes (a gather called on rank 0 alone left the job hanging)
            slowest = np.array([one_call() for _ in range(calls)])
            comm.Allreduce(MPI.IN_PLACE, slowest, op=MPI.MAX)
            if w.is_root:
                timings[str(size)] = slowest.tolist()
        if w.is_root:
            write_result(args.result, timings)


def memcpy_seconds(size, warmup, repeats):
    """Median seconds of ``np.copyto`` of ``size`` bytes in this process."""
    source = np.ones(size // 4, np.float32)
    target = np.empty_like(source)
    for _ in range(warmup):
        np.copyto(target, source)
    calls = max(5, min(repeats, int(2.0 / max(_timed(np.copyto, target, source), 1e-9))))
    return statistics.median(_timed(np.copyto, target, source) for _ in range(calls))


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


# --- worker: the training steps --------------------------------------------------------------
def build(model_name):
    """(model, loss_and_backward(x, y, averager), optimizer, x, y) for one model on the global
    batch (x, y): the models and data of bench_word_lm.py and bench_lenet.py."""
    from tinyar.nn.loss import CrossEntropyLoss
    from tinyar.optim import SGD, Adam
    if model_name == "lm":
        from lm_twins import batch, tinyar_lm
        x, y = batch(LM_V, LM_BATCH, LM_STEPS)
        model, _ = tinyar_lm(LM_V, LM_EMBED, LM_HIDDEN, 1, "multilevel", x, y,
                             classes=LM_CLASSES)
        optimizer = Adam(model.parameters(), lr=1e-3)

        def loss_and_backward(xb, yb, averager):
            loss, _ = model.loss(xb, yb)
            model.zero_grad()
            averager.begin()
            model.backward()
            averager.finish()
            return loss
        return model, loss_and_backward, optimizer, x, y
    import tinyar
    from bench_lenet import tinyar_model
    rng = np.random.default_rng(0)
    x = rng.standard_normal((LENET_BATCH, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, LENET_BATCH).astype(np.int64)
    tinyar.manual_seed(0)
    model, criterion = tinyar_model(), CrossEntropyLoss()
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def loss_and_backward(xb, yb, averager):
        loss = criterion(model(xb), yb)
        model.zero_grad()
        averager.begin()
        model.backward(criterion.backward(), input_grad=False)  # x is data: no dL/dx
        averager.finish()
        return loss
    return model, loss_and_backward, optimizer, x, y


def steps_worker(args):
    """One process (no mpiexec): the whole batch on ``--cores`` threads, then half the batch
    on half the threads. Under ``mpiexec -n 2``: each rank its rows on half the threads,
    blocking then bucketed. Rank 0 writes {configuration: median seconds} to ``args.result``."""
    from tinyar.distributed import (GradientAverager, abort_on_exception, broadcast_model,
                                    configure_threads, rank_rows, world)
    w = world()
    with abort_on_exception(w):
        if w.size not in (1, RANKS):
            raise RuntimeError(f"bench_distributed --worker steps: expected 1 or {RANKS} "
                               f"ranks, got {w.size}")
        model, loss_and_backward, optimizer, x, y = build(args.model)
        broadcast_model(model, w)  # the same start on every rank (a no-op in one process)
        per_rank = max(1, args.cores // RANKS)
        if w.size == 1:
            # rank 0's rows of the global batch, as in the two-process run
            configs = [("one", args.cores, x, y),
                       ("half", per_rank, x[::RANKS].copy(), y[::RANKS].copy())]
            modes = ["blocking"] * len(configs)  # size 1: the averager does nothing
        else:
            xr, yr = rank_rows(x, w), rank_rows(y, w)
            configs = [("blocking", per_rank, xr, yr), ("bucketed", per_rank, xr, yr)]
            modes = ["blocking", "bucketed"]
        medians = {}
        for (name, threads, xb, yb), mode in zip(configs, modes):
            configure_threads(w, threads)
            averager = GradientAverager(model, w, mode=mode)

            def step():
                loss_and_backward(xb, yb, averager)
                optimizer.step()
            mine = step_times(step, args.warmup, args.repeats)
            if w.size > 1:  # a step lasts until its slowest rank is done
                gathered = w.comm.gather(mine, root=0)
                mine = np.max(np.array(gathered), axis=0).tolist() if w.is_root else mine
            medians[name] = statistics.median(mine)
        if w.is_root:
            write_result(args.result, medians)


# --- the launcher ------------------------------------------------------------------------------
def find_mpiexec(given):
    """The mpiexec to use: ``--mpiexec``, else the one beside this Python (a virtual
    environment's, from the ``mpich`` package), else the first on PATH."""
    if given:
        return given
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("mpiexec")
    if found is None:
        sys.exit("bench_distributed: no mpiexec found beside this Python or on PATH; "
                 "pip install -e '.[distributed]' (mpi4py and mpich), or pass --mpiexec PATH")
    return found


def job_environment():
    """This environment for a launched run, without the variables of an MPI job that this
    launcher may itself run in (a nested mpiexec would take them for its own)."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("PMI_", "PMIX_", "OMPI_", "PRTE_", "HYDRA_", "MPI_LOCAL"))}


def launch(args, folder, worker, ranks, extra=()):
    """Run one worker (under mpiexec when ``ranks`` > 1) and return the JSON it wrote."""
    result = os.path.join(folder, f"{worker}-{time.monotonic_ns()}.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker", worker,
               "--result", result, "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--sizes-max", str(args.sizes_max),
               "--cores", str(args.cores), *extra]
    if ranks > 1:
        command = [args.mpiexec, "-n", str(ranks), *command]
    env = job_environment()
    # a session of its own, so that a timeout ends mpiexec and every rank together
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, start_new_session=True)
    try:
        stdout, stderr = job.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        stdout, stderr = job.communicate()
        sys.exit(f"bench_distributed: {' '.join(command)} did not finish in --timeout "
                 f"{args.timeout} s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    if job.returncode != 0 or not os.path.exists(result):
        sys.exit(f"bench_distributed: {' '.join(command)} exited with {job.returncode}\n"
                 f"{stdout[-3000:]}\n{stderr[-3000:]}")
    from tinyar.fileio import read_json
    return read_json(result)


def allreduce_table(args, folder):
    per_size = {}  # size -> [per-round medians]
    copies = {}
    for _ in range(args.rounds):
        for size, seconds in launch(args, folder, "allreduce", RANKS).items():
            per_size.setdefault(int(size), []).append(statistics.median(seconds))
        for size in per_size:
            copies.setdefault(size, []).append(memcpy_seconds(size, args.warmup, args.repeats))
    factor = 2 * (RANKS - 1) / RANKS
    lines = [f"### all-reduce of float32 buffers, {RANKS} ranks on one machine, against a "
             f"memcpy in one process", "", f"machine: {machine()}", "",
             "predicted = 2(N-1)/N x S / B_memcpy (ring all-reduce, bandwidth term only; "
             "B_memcpy = S / memcpy time, measured here)", "",
             "| S | all-reduce (us) | algbw (GB/s) | busbw (GB/s) | memcpy (us) | "
             "B_memcpy (GB/s) | predicted (us) | measured / predicted |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sorted(per_size):
        t = statistics.median(per_size[size])
        copy = statistics.median(copies[size])
        bandwidth = size / copy
        predicted = factor * size / bandwidth
        lines.append(f"| {human_bytes(size)} | {t * 1e6:.1f} | {size / t / 1e9:.2f} | "
                     f"{size / t * factor / 1e9:.2f} | {copy * 1e6:.1f} | "
                     f"{bandwidth / 1e9:.2f} | {predicted * 1e6:.1f} | {t / predicted:.2f} |")
    return "\n".join(lines)


def steps_tables(args, folder):
    runs = {model: {} for model in MODELS}  # model -> configuration -> [per-round medians]
    for _ in range(args.rounds):
        for model in MODELS:
            for ranks in (1, RANKS):
                for name, seconds in launch(args, folder, "steps", ranks,
                                            ("--model", model)).items():
                    runs[model].setdefault(name, []).append(seconds)
    per_rank = max(1, args.cores // RANKS)
    tables = []
    for model in MODELS:
        ms = {name: statistics.median(values) * 1e3 for name, values in runs[model].items()}
        batch = GLOBAL_BATCH[model]
        rows = [(f"1 process x {args.cores} threads", batch, batch, ms["one"]),
                (f"1 process x {per_rank} thread(s), half the batch (no communication)",
                 batch // RANKS, batch // RANKS, ms["half"]),
                (f"{RANKS} processes x {per_rank} thread(s), blocking all-reduce", batch,
                 batch // RANKS, ms["blocking"]),
                (f"{RANKS} processes x {per_rank} thread(s), bucketed all-reduce", batch,
                 batch // RANKS, ms["bucketed"])]
        lines = [f"### {MODEL_TITLES[model]}: {RANKS} processes against 1", "",
                 f"machine: {machine()}", "",
                 "scaling efficiency = 1-process step at the global batch / this step; "
                 "per-rank efficiency = half-batch step alone / this step", "",
                 "| configuration | global batch | batch per process | median step (ms) | "
                 "samples/s | scaling efficiency | per-rank efficiency |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for name, global_batch, local_batch, step_ms in rows:
            efficiencies = "| |"  # defined for the two-process rows only
            if name.startswith(f"{RANKS} processes"):
                efficiencies = f"{ms['one'] / step_ms:.0%} | {ms['half'] / step_ms:.0%} |"
            lines.append(f"| {name} | {global_batch} | {local_batch} | {step_ms:.2f} | "
                         f"{global_batch / step_ms * 1e3:.0f} | {efficiencies}")
        lines.append(f"| reference: Horovod, ResNet-101 on 512 GPUs (Sergeev & Del Balso "
                     f"2018) | | | | | | {HOROVOD_EFFICIENCY:.0%} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


CLI_IMAGES, CLI_EPOCHS, CLI_TEST = 20_000, 3, 4000  # tinyar classify's defaults


def cli_table(args, folder):
    """The whole ``tinyar classify`` command in 1 process and on 2 ranks (see the docstring)."""
    from tinyar.fileio import read_json
    common = ["-m", "tinyar.cli", "classify", "--data", "glyphs", "--train-size",
              str(CLI_IMAGES), "--test-size", str(CLI_TEST), "--epochs", str(CLI_EPOCHS),
              "--seed", "0"]
    sides = {"one": ([sys.executable, *common, "--batch", "64", "--threads", str(args.cores)],
                     f"tinyar classify --batch 64 --threads {args.cores}"),
             "two": ([args.mpiexec, "-n", str(RANKS), sys.executable, *common, "--batch",
                      str(64 // RANKS)], f"mpiexec -n {RANKS} tinyar classify --batch "
                                         f"{64 // RANKS}")}
    env = job_environment()
    walls, trains, accuracy = {k: [] for k in sides}, {k: [] for k in sides}, {}
    for round_ in range(args.rounds):
        for name, (command, _) in sides.items():
            out = os.path.join(folder, f"cli-{name}-{round_}")
            start = time.perf_counter()
            job = subprocess.run([*command, "--out", out], capture_output=True, text=True,
                                 env=env, timeout=args.timeout, start_new_session=True)
            walls[name].append(time.perf_counter() - start)
            if job.returncode != 0:
                sys.exit(f"bench_distributed: {' '.join(command)} exited with "
                         f"{job.returncode}\n{job.stdout[-3000:]}\n{job.stderr[-3000:]}")
            report = read_json(os.path.join(out, "metrics.json"))
            trains[name].append(report["train_seconds"])
            accuracy[name] = report["fine"]["accuracy"]
    lines = [f"### tinyar classify, LeNet on {CLI_IMAGES:,} glyphs, {CLI_EPOCHS} epochs, "
             f"global batch 64: {RANKS} ranks against 1 process", "",
             f"machine: {machine()}", "",
             "| command | median wall (s) | median training (s) | training speed-up | "
             "test accuracy (fine) |", "|---|---:|---:|---:|---:|"]
    base = statistics.median(trains["one"])
    for name, (_, shown) in sides.items():
        train = statistics.median(trains[name])
        lines.append(f"| `{shown}` | {statistics.median(walls[name]):.1f} | {train:.1f} | "
                     f"{base / train:.2f}x | {accuracy[name]:.4f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "allreduce", "steps", "cli"), default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sizes-max", type=parse_bytes, default=64 << 20,
                        help="the largest all-reduce buffer (default 64M)")
    parser.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1),
                        help="the cores the comparison shares: 1 process uses them all, "
                             "each of the 2 ranks half (default 2)")
    parser.add_argument("--mpiexec", default=None)
    parser.add_argument("--timeout", type=int, default=900,
                        help="seconds one launched run may take before it is killed")
    parser.add_argument("--worker", choices=("allreduce", "steps"), help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in ("rounds", "repeats", "cores", "timeout"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected an integer >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup: expected an integer >= 0, got {args.warmup}")
    if args.worker == "allreduce":
        return allreduce_worker(args)
    if args.worker == "steps":
        return steps_worker(args)
    args.mpiexec = find_mpiexec(args.mpiexec)
    with tempfile.TemporaryDirectory(prefix="bench_distributed.") as folder:
        if args.part in ("all", "allreduce"):
            print(allreduce_table(args, folder))
        if args.part in ("all", "steps"):
            if args.part == "all":
                print()
            print(steps_tables(args, folder))
        if args.part == "cli":
            print(cli_table(args, folder))


if __name__ == "__main__":
    main()
