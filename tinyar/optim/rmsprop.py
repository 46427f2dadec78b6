"""``RMSprop``: steps scaled by a running average of squared gradients."""
from .optimizer import Optimizer, check_flag, check_number


class RMSprop(Optimizer):
    """Divide each element's gradient by the root of its recent mean square.

    torch.optim.RMSprop's algorithm, for every element:

        g  <- g + weight_decay * p
        v  <- alpha * v + (1 - alpha) * g^2
        centered:  m <- alpha * m + (1 - alpha) * g;   v~ = v - m^2   (else v~ = v)
        momentum > 0:  b <- momentum * b + g / (sqrt(v~) + eps);   p <- p - lr * b
        otherwise:     p <- p - lr * g / (sqrt(v~) + eps)

    Unlike Adagrad's growing sum, the running average forgets old gradients
    (time constant ~ 1 / (1 - alpha) steps). ``centered`` divides by an
    estimate of the gradient's variance instead of its second moment.

    State: ``square_avg`` (v), ``grad_avg`` (m, when centered) and
    ``momentum_buffer`` (b, when momentum > 0).
    """

    optional_state = ("grad_avg", "momentum_buffer")
    nonnegative_state = ("square_avg",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False):
        super().__init__(params, self.check_hyperparameters(dict(
            lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
            centered=centered)))

    @classmethod
    def check_hyperparameters(cls, group):
        name = cls.__name__
        return dict(lr=check_number(name, "lr", group["lr"], low=0),
                    alpha=check_number(name, "alpha", group["alpha"], low=0, high=1),
                    eps=check_number(name, "eps", group["eps"], low=0),
                    weight_decay=check_number(name, "weight_decay", group["weight_decay"], low=0),
                    momentum=check_number(name, "momentum", group["momentum"], low=0),
                    centered=check_flag(name, "centered", group["centered"]))

    def _init_state(self):
        self.state["square_avg"] = self._zeros()

    def _update(self, group, data, grad, step):
        # created on first use, as torch does, so that turning them on later works
        if group["centered"] and "grad_avg" not in self.state:
            self.state["grad_avg"] = self._zeros()
        if group["momentum"] > 0 and "momentum_buffer" not in self.state:
            self.state["momentum_buffer"] = self._zeros()
        self._backend.rmsprop_step(data, grad, self.state["square_avg"],
                                   self.state.get("grad_avg"), self.state.get("momentum_buffer"),
                                   group["lr"], group["alpha"], group["eps"],
                                   group["weight_decay"], group["momentum"], group["centered"])
