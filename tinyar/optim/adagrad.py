"""``Adagrad``: a learning rate per element, shrinking with its squared gradients."""
from .optimizer import Optimizer, check_number


class Adagrad(Optimizer):
    """Each element's step is scaled by 1 / sqrt(sum of its squared gradients).

    torch.optim.Adagrad's algorithm at step t (from 1), for every element:

        g   <- g + weight_decay * p
        clr  = lr / (1 + (t - 1) * lr_decay)
        s   <- s + g^2                    (s starts at initial_accumulator_value)
        p   <- p - clr * g / (sqrt(s) + eps)

    Elements with large past gradients take small steps, rare ones large
    steps; the sum only grows, so the steps shrink over training.

    State: ``sum`` (s) and ``step``.
    """

    nonnegative_state = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10):
        super().__init__(params, self.check_hyperparameters(dict(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, eps=eps)))

    @classmethod
    def check_hyperparameters(cls, group):
        name = cls.__name__
        return dict(lr=check_number(name, "lr", group["lr"], low=0),
                    lr_decay=check_number(name, "lr_decay", group["lr_decay"], low=0),
                    weight_decay=check_number(name, "weight_decay", group["weight_decay"], low=0),
                    initial_accumulator_value=check_number(
                        name, "initial_accumulator_value", group["initial_accumulator_value"],
                        low=0),
                    eps=check_number(name, "eps", group["eps"], low=0))

    def _init_state(self):
        state_sum = self._zeros()
        state_sum[:] = self.defaults["initial_accumulator_value"]
        self.state["sum"] = state_sum

    def _update(self, group, data, grad, step):
        self._backend.adagrad_step(data, grad, self.state["sum"], group["lr"], group["lr_decay"],
                                   group["weight_decay"], group["eps"], step)
