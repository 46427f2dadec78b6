"""Optimizers, gradient clipping and learning-rate schedulers.

Each optimizer updates all of a model's parameters with one kernel call over
its flat parameter buffer (see ``optimizer.py``); names, defaults and
algorithms are torch.optim's::

    opt = optim.Adam(model, lr=1e-3)          # or model.parameters()
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    for step in range(100):
        loss = criterion(model(x), y)
        opt.zero_grad()                        # one fill of the flat gradient buffer
        model.backward(criterion.backward())
        optim.clip_grad_norm_(model, 1.0)      # one norm pass, one scale pass
        opt.step()                             # one kernel call
        sched.step()
"""
from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .optimizer import Optimizer, OptimizerError
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "OptimizerError", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
           "clip_grad_norm_", "clip_grad_value_", "lr_scheduler"]
