"""A small model in tinyar and its twin parameters in torch, trained side by side.

The gradients come from a fixed loss computed with NumPy from each side's own
current parameters, so a difference in one step changes every later gradient
and shows up in the trajectory:

    L(p) = sum_i c_i (p_i - t_i)^2 / 2 + sum_i n_ik p_i       (step k)
    dL/dp = c (p - t) + n_k
"""
import numpy as np

from tinyar.nn.container import Sequential
from tinyar.nn.linear import Linear

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def make_model(dtype, seed=0):
    """Linear(6, 5) -> Linear(5, 3): 53 parameters in one flat buffer."""
    import tinyar
    tinyar.manual_seed(seed)
    model = Sequential(Linear(6, 5), Linear(5, 3))
    return model.to(dtype)


class QuadraticLoss:
    """The gradient of a fixed quadratic bowl plus per-step noise, parameter by parameter."""

    def __init__(self, model, seed=1):
        rng = np.random.default_rng(seed)
        self.names = [name for name, _ in model.named_parameters()]
        shapes = [p.shape for p in model.parameters()]
        self.curvature = [rng.uniform(0.5, 2.0, s) for s in shapes]
        self.target = [rng.standard_normal(s) for s in shapes]
        self.noise = [[0.3 * rng.standard_normal(s) for s in shapes] for _ in range(64)]

    def grads(self, params, step):
        """dL/dp for each parameter array (host NumPy arrays, any float dtype)."""
        return [(c * (p.astype(np.float64) - t) + n).astype(p.dtype)
                for p, c, t, n in zip(params, self.curvature, self.target, self.noise[step])]


def torch_params(torch, model):
    """torch leaf tensors holding a copy of the model's parameters, in order."""
    return [torch.nn.Parameter(torch.from_numpy(np.array(p.data))) for p in model.parameters()]


def set_grads(model, loss, step):
    """Write this step's gradient into each tinyar p.grad (in place: the flat buffer)."""
    params = model.parameters()
    for p, g in zip(params, loss.grads([p.data for p in params], step)):
        p.grad[...] = g


def set_torch_grads(torch, tparams, loss, step):
    for p, g in zip(tparams, loss.grads([p.detach().numpy() for p in tparams], step)):
        p.grad = torch.from_numpy(g)


def assert_same_params(model, tparams, dtype, step):
    for (name, p), t in zip(model.named_parameters(), tparams):
        np.testing.assert_allclose(p.data, t.detach().numpy(), err_msg=f"{name} after step {step}",
                                   **TOL[np.dtype(dtype).type])
