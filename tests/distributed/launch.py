"""Running a script under ``mpiexec`` from a test.

``MPI_AVAILABLE``: mpi4py can be imported and an ``mpiexec`` exists (beside this Python, as the
``mpich`` wheel of the ``distributed`` extra installs it, or on PATH). ``requires_mpi`` skips a
test, with the install command, where it does not. ``mpi_run(args, n)`` runs
``mpiexec -n n <args>`` and returns the finished process with its output as text;
``single(args)`` runs ``tinyar ARGS`` in one process, ``assert_same_weights`` compares
two run folders' ``model.npz``, and ``interrupt_job`` signals a training job once it trains.
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def _find_mpiexec():
    """The ``mpiexec`` beside ``sys.executable`` (a virtual environment's), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
# find_spec does not import mpi4py, so the pytest process never initialises MPI
MPI_AVAILABLE = MPIEXEC is not None and importlib.util.find_spec("mpi4py") is not None

requires_mpi = pytest.mark.skipif(
    not MPI_AVAILABLE,
    reason="the distributed extra is not installed: pip install -e '.[distributed]'")

# Variables an enclosing MPI launch (pytest itself run under mpiexec, a batch scheduler) leaves
# in the environment: a nested mpiexec would take them for its own and join the outer job.
_LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "PRTE_", "HYDRA_", "MPI_LOCAL", "SLURM_")
# Open MPI refuses to start as root, or more ranks than cores, unless told; MPICH ignores these.
_OPEN_MPI_PERMISSIONS = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                         "OMPI_MCA_rmaps_base_oversubscribe": "1",
                         "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe"}


class MPITimeout(AssertionError):
    """An mpiexec job that did not finish in time (its output is in the message)."""


def mpi_environment(env=None):
    """The environment a job runs in: this one without an enclosing launch's variables, with
    the repository on PYTHONPATH and Open MPI's permissions, then ``env`` (a dict) on top."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_PREFIXES)}
    clean.update(_OPEN_MPI_PERMISSIONS)
    path = clean.get("PYTHONPATH")
    clean["PYTHONPATH"] = str(REPOSITORY) + (os.pathsep + path if path else "")
    clean.update(env or {})
    return clean


def mpi_run(args, n=2, timeout=120, env=None):
    """Run ``mpiexec -n n <args>`` (``args``: a list, e.g. ``[sys.executable, script, ...]``)
    and return the ``subprocess.CompletedProcess`` with stdout and stderr as text. The job
    gets its own process group: on timeout every rank is killed and ``MPITimeout`` is raised
    with what each stream held, so a hung rank shows what the others printed."""
    if MPIEXEC is None:
        raise FileNotFoundError("mpi_run: no mpiexec beside sys.executable or on PATH; "
                                "pip install -e '.[distributed]'")
    command = [MPIEXEC, "-n", str(n), *map(str, args)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=mpi_environment(env), cwd=str(REPOSITORY),
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # mpiexec and the ranks it started
        stdout, stderr = process.communicate()
        raise MPITimeout(f"mpiexec -n {n} {' '.join(command[3:])}: no result after {timeout} s"
                         f"\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_script(name, *arguments, n=2, timeout=120, env=None):
    """``mpi_run`` of ``python tests/distributed/scripts/<name> <arguments>``."""
    return mpi_run([sys.executable, SCRIPTS / name, *arguments], n=n, timeout=timeout, env=env)


def check_finished(result):
    """``result`` (from ``mpi_run``) when its job exited 0; else an AssertionError with both
    streams (each rank's output is in them)."""
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, result.args))} exited {result.returncode}"
                             f"\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")
    return result


# --- the tinyar command line under test ----------------------------------------------------
TINYAR = [sys.executable, "-m", "tinyar.cli"]


def single(args):
    """``tinyar ARGS`` in one process (the job's environment, without mpiexec)."""
    result = subprocess.run([*TINYAR, *map(str, args)], capture_output=True, text=True,
                            env=mpi_environment(), cwd=str(REPOSITORY), timeout=120)
    return check_finished(result)


def weights(folder):
    with np.load(folder / "model.npz", allow_pickle=False) as saved:
        return {k: saved[k] for k in saved.files if saved[k].dtype.kind == "f"}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for key in wa:
        np.testing.assert_allclose(wa[key], wb[key], rtol=2e-4, atol=2e-6, err_msg=key)


def interrupt_job(args, run, sig, to_group, settle=1.0):
    """Start ``mpiexec -n 2 <args>`` (a training that writes the run folder ``run``), wait
    until ``run`` holds log.json (the step-0 checkpoint: training has started) and ``settle``
    seconds more, then send ``sig`` to mpiexec alone (it passes it on to the ranks) or, with
    ``to_group``, to the job's whole process group, as a terminal's Ctrl-C does. Returns the
    finished job's (returncode, stdout, stderr)."""
    job = subprocess.Popen([MPIEXEC, "-n", "2", *map(str, args)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=mpi_environment(),
                           cwd=str(REPOSITORY), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (run / "log.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(settle)
        if to_group:
            os.killpg(job.pid, sig)
        else:
            job.send_signal(sig)
        stdout, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    return job.returncode, stdout, stderr
