"""Under ``mpiexec -n 2``: rank 1 raises while rank 0 waits in a collective.

    python abort.py tinyar|python

``tinyar``: rank 1 raises a ConfigError (a one-line message); ``python``: a ZeroDivisionError
(its traceback too). Without ``abort_on_exception`` rank 0 would wait in its all-reduce for
ever; with it, MPI_Abort ends the job at once, with rank 1's message.
"""
import sys

from tinyar.distributed import abort_on_exception, allreduce_sum, world
from tinyar.errors import ConfigError


def fail(kind):
    if kind == "tinyar":
        raise ConfigError("--steps: expected an integer >= 1, got 0 (raised on purpose)")
    return 1 / 0


def main():
    W = world()
    with abort_on_exception(W):
        if W.rank == 1:
            fail(sys.argv[1])
        allreduce_sum([1.0], W)  # rank 0 waits here for a rank that will never come
    print("not reached: the job should have been aborted", flush=True)


if __name__ == "__main__":
    main()
