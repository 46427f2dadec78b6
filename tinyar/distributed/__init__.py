"""Data-parallel training over MPI (mpi4py): ``mpiexec -n N`` runs N copies of a program.

Every rank holds the whole model and trains on its share of each global batch:

    W = world()                                   # rank, size; one process without mpiexec
    configure_threads(W)                          # cores // ranks on this machine, each
    broadcast_model(model, W)                     # every rank starts from rank 0's weights
    averager = GradientAverager(model, W, mode="bucketed")
    for x, y in batches:                          # the same global batches on every rank
        model.zero_grad()
        loss = model.loss(rank_rows(x, W), rank_rows(y, W))
        averager.begin(); model.backward(); averager.finish()   # grad = mean over ranks
        optimizer.step()                          # the same step everywhere
        loss = allreduce_mean([loss], W)[0]       # the global batch's loss

so N ranks at batch b compute what one process computes at batch N b. ``world.py`` says
who is who and how a failing rank ends the job (``abort_on_exception``), ``sync.py`` how
the ranks agree, ``gradients.py`` how the gradients are averaged, ``data.py`` which rows
each rank takes, ``placement.py`` the threads and GPU of each rank.

Importing this package never imports mpi4py: ``world()`` does, under ``mpiexec``, and says
how to install it (``pip install 'tinyar[distributed]'``) where it is missing.
"""
from .data import rank_part, rank_rows, rank_seed, rank_share
from .gradients import GradientAverager
from .placement import configure_threads, cuda_aware, device_for_rank, threads_per_rank
from .sync import (allreduce_mean, allreduce_sum, broadcast_buffers, broadcast_json,
                   broadcast_model, broadcast_optimizer)
from .world import World, abort_on_exception, launched_by_mpi, world

__all__ = ["World", "world", "launched_by_mpi", "abort_on_exception", "broadcast_model",
           "broadcast_buffers", "broadcast_optimizer", "broadcast_json", "allreduce_sum",
           "allreduce_mean", "GradientAverager", "rank_part", "rank_rows", "rank_seed",
           "rank_share", "threads_per_rank", "configure_threads", "device_for_rank",
           "cuda_aware"]
