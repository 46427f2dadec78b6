"""``Adam`` and ``AdamW``: momentum plus a per-element step size from the second moment."""
from .optimizer import Optimizer, OptimizerError, check_flag, check_number


class Adam(Optimizer):
    """Adaptive moment estimation (Kingma & Ba, 2015).

    torch.optim.Adam's algorithm at step t (from 1), for every element:

        g  <- g + weight_decay * p            (Adam: L2 penalty in the gradient)
        m  <- beta1 * m + (1 - beta1) * g     first moment: a running mean of g
        v  <- beta2 * v + (1 - beta2) * g^2   second moment: a running mean of g^2
        amsgrad:  v_max <- max(v_max, v), used in place of v below
        m^ = m / (1 - beta1^t),  v^ = v / (1 - beta2^t)    (bias corrections:
                                               m and v start at 0)
        p  <- p - lr * m^ / (sqrt(v^) + eps)

    The kernel folds the corrections into two scalars, as torch does:
    step_size = lr / (1 - beta1^t), denom = sqrt(v) / sqrt(1 - beta2^t) + eps.

    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (amsgrad)
    and ``step``.
    """

    decoupled_weight_decay = False
    optional_state = ("max_exp_avg_sq",)
    nonnegative_state = ("exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False):
        super().__init__(params, self.check_hyperparameters(dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)))

    @classmethod
    def check_hyperparameters(cls, group):
        name = cls.__name__
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise OptimizerError(f"{name}: expected betas as a pair (beta1, beta2), got "
                                 f"{betas!r}")
        return dict(lr=check_number(name, "lr", group["lr"], low=0),
                    betas=tuple(check_number(name, f"betas[{i}]", beta, low=0, high=1,
                                             high_open=True) for i, beta in enumerate(betas)),
                    eps=check_number(name, "eps", group["eps"], low=0),
                    weight_decay=check_number(name, "weight_decay", group["weight_decay"], low=0),
                    amsgrad=check_flag(name, "amsgrad", group["amsgrad"]))

    def _init_state(self):
        self.state["exp_avg"] = self._zeros()
        self.state["exp_avg_sq"] = self._zeros()

    def _update(self, group, data, grad, step):
        if group["amsgrad"] and "max_exp_avg_sq" not in self.state:
            self.state["max_exp_avg_sq"] = self._zeros()
        beta1, beta2 = group["betas"]
        self._backend.adam_step(data, grad, self.state["exp_avg"], self.state["exp_avg_sq"],
                                group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                                step, decoupled_weight_decay=self.decoupled_weight_decay,
                                max_exp_avg_sq=self.state.get("max_exp_avg_sq")
                                if group["amsgrad"] else None)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    The same as ``Adam`` except for the weight decay: instead of adding
    ``weight_decay * p`` to the gradient (where the adaptive scaling would
    shrink it), every step first shrinks the weights directly:

        p <- p * (1 - lr * weight_decay)

    and then takes the Adam step with the plain gradient. Default
    ``weight_decay=1e-2``, as in torch.optim.AdamW.
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)
