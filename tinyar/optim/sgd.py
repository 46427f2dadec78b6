"""``SGD``: stochastic gradient descent, with momentum and weight decay."""
from .optimizer import Optimizer, OptimizerError, check_flag, check_number


class SGD(Optimizer):
    """p <- p - lr * g, with optional (Nesterov) momentum and L2 weight decay.

    torch.optim.SGD's algorithm, for every element, with g = dL/dp:

        g <- g + weight_decay * p
        b <- g                                      (first step)
        b <- momentum * b + (1 - dampening) * g     (later steps)
        g <- g + momentum * b   (nesterov)   or   g <- b
        p <- p - lr * g

    The momentum lines run only when ``momentum != 0``. Nesterov momentum
    looks one step ahead along the velocity ``b``; it needs ``momentum > 0``
    and ``dampening == 0``.

    State: ``momentum_buffer`` (b, one value per parameter element), created
    at the first step with ``momentum != 0``.
    """

    optional_state = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False):
        super().__init__(params, self.check_hyperparameters(dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov)))

    @classmethod
    def check_hyperparameters(cls, group):
        name = cls.__name__
        checked = dict(lr=check_number(name, "lr", group["lr"], low=0),
                       momentum=check_number(name, "momentum", group["momentum"], low=0),
                       dampening=check_number(name, "dampening", group["dampening"]),
                       weight_decay=check_number(name, "weight_decay", group["weight_decay"],
                                                 low=0),
                       nesterov=check_flag(name, "nesterov", group["nesterov"]))
        if checked["nesterov"] and (checked["momentum"] <= 0 or checked["dampening"] != 0):
            raise OptimizerError(f"{name}: nesterov=True needs momentum > 0 and dampening = 0, "
                                 f"got momentum={checked['momentum']}, "
                                 f"dampening={checked['dampening']}")
        return checked

    def _update(self, group, data, grad, step):
        first_step = False
        if group["momentum"] != 0 and "momentum_buffer" not in self.state:
            self.state["momentum_buffer"] = self._zeros()
            first_step = True  # torch starts the buffer at the gradient itself
        self._backend.sgd_step(data, grad, self.state.get("momentum_buffer"), group["lr"],
                               group["momentum"], group["dampening"], group["weight_decay"],
                               group["nesterov"], first_step)
