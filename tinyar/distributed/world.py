"""The world: which process this is among the ranks of an MPI job, and how a job ends.

    mpiexec -n 4 tinyar train ...        four processes, ranks 0..3, one program

MPI starts the same program N times; each copy (a *rank*) learns its number and N from
``MPI.COMM_WORLD`` and talks to the others only through collective calls (broadcast,
all-reduce) that every rank must make, in the same order. ``world()`` is that view:

    rank, size              this process's number and how many there are
    local_rank, local_size  the same among the ranks on this machine (threads, GPUs)
    comm                    the mpi4py communicator (None in a single process)

Started without ``mpiexec`` (or with ``-n 1``), ``world()`` is a world of one process whose
collectives are identities, and mpi4py is never imported: tinyar without the
``distributed`` extra works as before. Whether MPI started us is read from the variables
the launcher sets (``launched_by_mpi``), so that question costs no import either.

A collective waits for every rank. If one rank raises and stops, the others wait for it
forever. ``abort_on_exception(world)`` turns an exception on any rank into
``MPI_Abort``, which ends every rank of the job, with that rank's message.
"""
import contextlib
import os
import sys
import traceback

from ..errors import ConfigError, TinyarError

INSTALL_MESSAGE = ("tinyar.distributed: mpi4py is not installed; pip install "
                   "'tinyar[distributed]' (mpi4py and an MPI, mpich)")

# What launchers set, by implementation: MPICH's hydra (and Intel MPI) PMI_*, Open MPI OMPI_*.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK")
_LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "PMI_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")
_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "PMI_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE")

_the_world = None  # created once, by world()


def _environment_int(names, default):
    """The first of the variables ``names`` that holds a whole number, else ``default``."""
    for name in names:
        text = os.environ.get(name, "").strip()
        if text.isdigit():
            return int(text)
    return default


def launched_by_mpi() -> bool:
    """True when ``mpiexec``/``mpirun`` started this process as one of more than one rank,
    read from the launcher's variables (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``): no mpi4py
    import, so it may be asked anywhere."""
    return _environment_int(_SIZE_VARIABLES, 1) > 1


def launched_rank() -> int:
    """This process's rank as the launcher's variables give it (0 without ``mpiexec``): no
    mpi4py import, for what must be said once per job before the world exists."""
    return _environment_int(_RANK_VARIABLES, 0)


class World:
    """The ranks of a job as this process sees them (see the module docstring).

    ``World()`` is the world of one process; ``world()`` builds the real one. Tests may build
    one by hand (``World(local_size=4)``) to ask what a rank of a bigger job would do.
    """

    def __init__(self, rank=0, size=1, local_rank=0, local_size=1, comm=None):
        self.rank, self.size = int(rank), int(size)
        self.local_rank, self.local_size = int(local_rank), int(local_size)
        self.comm = comm
        if not (0 <= self.rank < self.size and 0 <= self.local_rank < self.local_size):
            raise ConfigError(f"World: expected 0 <= rank < size and 0 <= local_rank < "
                              f"local_size, got rank={rank}, size={size}, "
                              f"local_rank={local_rank}, local_size={local_size}")

    @property
    def is_root(self):
        """Rank 0: the one that writes files and prints progress."""
        return self.rank == 0

    def barrier(self):
        """Wait until every rank has called ``barrier()``."""
        if self.comm is not None:
            self.comm.Barrier()

    def abort(self, message, code=1):
        """End the whole job: print ``tinyar (rank R of N): message`` to stderr and call
        ``MPI_Abort``, which kills every rank (a single process exits with ``code``)."""
        print(f"tinyar (rank {self.rank} of {self.size}): {message}", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        if self.comm is not None and self.size > 1:
            self.comm.Abort(code)
        sys.exit(code)

    def __repr__(self):
        return (f"World(rank={self.rank}, size={self.size}, "
                f"local={self.local_rank}/{self.local_size})")


def import_mpi():
    """``mpi4py.MPI`` (importing it initialises MPI), or the install message as a
    ``ConfigError`` where mpi4py is missing."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError(INSTALL_MESSAGE) from None
    return MPI


def world() -> World:
    """This process's ``World``, created on the first call: under ``mpiexec`` with more
    than one rank, ``MPI.COMM_WORLD`` (mpi4py is imported then); otherwise one process."""
    global _the_world
    if _the_world is None:
        _the_world = _mpi_world() if launched_by_mpi() else World()
    return _the_world


def _mpi_world():
    MPI = import_mpi()
    comm = MPI.COMM_WORLD
    try:
        # the ranks that share this machine's memory: the ones that share its cores and GPUs
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = local.Get_rank(), local.Get_size()
        local.Free()
    except MPI.Exception:  # an MPI without shared-memory splits: ask the launcher
        local_rank = _environment_int(_LOCAL_RANK_VARIABLES, 0)
        local_size = _environment_int(_LOCAL_SIZE_VARIABLES, 1)
    return World(comm.Get_rank(), comm.Get_size(), local_rank, local_size, comm)


class abort_on_exception(contextlib.ContextDecorator):
    """``with abort_on_exception(world): ...`` (or ``@abort_on_exception(world)``): an
    exception on this rank ends the whole job instead of leaving the other ranks waiting in
    a collective for a rank that has stopped.

    A tinyar error prints its one-line message; any other exception its traceback, then
    ``TypeName: message``; then ``world.abort(...)`` (``MPI_Abort``: every rank exits, and
    ``mpiexec`` returns non-zero). ``KeyboardInterrupt`` and ``SystemExit`` pass through (a
    Ctrl-C reaches every rank anyway). In a world of one process nothing can hang, so the
    exception propagates unchanged, and a caller's own handling of it still applies.
    """

    def __init__(self, world):
        self.world = world

    def __enter__(self):
        return self.world

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            return False
        if self.world.size == 1:
            return False
        if isinstance(exc, TinyarError):
            message = str(exc)
        else:
            traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
            message = f"{exc_type.__name__}: {exc}"
        self.world.abort(message, code=1)
        return False  # not reached: abort ends the process
