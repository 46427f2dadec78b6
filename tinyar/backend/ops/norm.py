"""Layer normalisation and batch normalisation.

Shapes. LayerNorm works on x viewed as (rows, F): each row is normalised over
its F features. BatchNorm works on x viewed as (N, C, L): each channel c is
normalised over the N * L values x[:, c, :] (BatchNorm1d's (N, C) input is
(N, C, 1)).

Both compute

    x_hat = (x - mean) * rstd,   rstd = 1 / sqrt(var + eps)   (var: biased)
    y     = x_hat * weight + bias

``weight`` / ``bias`` may be ``None`` (no affine transform: weight 1, bias 0).
Backward ops *add* into ``grad_weight`` / ``grad_bias`` (skipped when they
are ``None``) and return dL/dx. Their ``out`` argument is listed as updated
so that the op tests compare dL/dx too.
"""
import numpy as np

from . import op


def _affine(x_hat, weight, bias):
    y = x_hat * weight if weight is not None else x_hat.copy()
    return y + bias if bias is not None else y


def _plus(grad_param, value):
    return None if grad_param is None else grad_param + value


# --- LayerNorm ----------------------------------------------------------------
def _ln_example(rng, dtype):
    return dict(x=(rng.standard_normal((5, 7)) * 3 + 2).astype(dtype),
                weight=rng.standard_normal(7).astype(dtype),
                bias=rng.standard_normal(7).astype(dtype), eps=1e-5)


def _ln_stats(x, eps):
    mean = x.mean(axis=1)
    rstd = 1 / np.sqrt(x.var(axis=1) + eps)
    return mean, rstd


@op("x: (rows, F); weight, bias: (F,) or None; out: (rows, F); out_mean, out_rstd: (rows,)",
    example=_ln_example)
def layer_norm_forward(x, weight, bias, eps, out=None, out_mean=None, out_rstd=None):
    """(y, mean, rstd), statistics over the last axis."""
    mean, rstd = _ln_stats(x, eps)
    x_hat = (x - mean[:, None]) * rstd[:, None]
    return _affine(x_hat, weight, bias), mean.astype(x.dtype), rstd.astype(x.dtype)


def _ln_backward_example(rng, dtype):
    args = _ln_example(rng, dtype)
    x = args["x"]
    mean, rstd = _ln_stats(x.astype(np.float64), args["eps"])
    return dict(grad=rng.standard_normal(x.shape).astype(dtype), x=x,
                mean=mean.astype(dtype), rstd=rstd.astype(dtype), weight=args["weight"],
                grad_weight=rng.standard_normal(7).astype(dtype),
                grad_bias=rng.standard_normal(7).astype(dtype),
                out=np.zeros(x.shape, dtype))


@op("grad, x: (rows, F); mean, rstd: (rows,); weight, grad_weight, grad_bias: (F,) or None; "
    "out: (rows, F); updates grad_weight, grad_bias",
    example=_ln_backward_example, inplace=("grad_weight", "grad_bias", "out"), rtol32=1e-4,
    atol32=1e-5)
def layer_norm_backward(grad, x, mean, rstd, weight, grad_weight, grad_bias, out=None):
    """dL/dx = rstd * (g_hat - mean(g_hat) - x_hat * mean(g_hat * x_hat)),  g_hat = g * weight;
    grad_weight += sum_rows(g * x_hat); grad_bias += sum_rows(g)."""
    x_hat = (x - mean[:, None]) * rstd[:, None]
    g_hat = grad * weight if weight is not None else grad
    dx = rstd[:, None] * (g_hat - g_hat.mean(axis=1, keepdims=True)
                          - x_hat * (g_hat * x_hat).mean(axis=1, keepdims=True))
    return _plus(grad_weight, (grad * x_hat).sum(axis=0)), _plus(grad_bias, grad.sum(axis=0)), dx


# --- BatchNorm ----------------------------------------------------------------
def _bn_example(rng, dtype):
    return dict(x=(rng.standard_normal((4, 3, 5)) * 2 - 1).astype(dtype),
                weight=rng.standard_normal(3).astype(dtype),
                bias=rng.standard_normal(3).astype(dtype), eps=1e-5)


def _bn_view(v):
    return v[None, :, None]


@op("x: (N, C, L); weight, bias: (C,) or None; out: (N, C, L); out_mean, out_var: (C,)",
    example=_bn_example)
def batch_norm_forward_train(x, weight, bias, eps, out=None, out_mean=None, out_var=None):
    """(y, mean, var): each channel's batch statistics (var biased), x normalised by them."""
    mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    x_hat = (x - _bn_view(mean)) / np.sqrt(_bn_view(var) + eps)
    w = None if weight is None else _bn_view(weight)
    b = None if bias is None else _bn_view(bias)
    return _affine(x_hat, w, b), mean.astype(x.dtype), var.astype(x.dtype)


def _bn_eval_example(rng, dtype):
    args = _bn_example(rng, dtype)
    return dict(x=args.pop("x"), mean=rng.standard_normal(3).astype(dtype),
                var=rng.random(3).astype(dtype) + 0.5, **args)


@op("x: (N, C, L); mean, var, weight, bias: (C,) (weight, bias may be None); out: (N, C, L)",
    example=_bn_eval_example)
def batch_norm_forward_eval(x, mean, var, weight, bias, eps, out=None):
    """y = (x - mean) / sqrt(var + eps) * weight + bias with given (running) statistics."""
    x_hat = (x - _bn_view(mean)) / np.sqrt(_bn_view(var) + eps)
    w = None if weight is None else _bn_view(weight)
    b = None if bias is None else _bn_view(bias)
    return _affine(x_hat, w, b)


def _bn_backward_example(rng, dtype):
    args = _bn_example(rng, dtype)
    x = args["x"]
    return dict(grad=rng.standard_normal(x.shape).astype(dtype), x=x,
                mean=x.mean(axis=(0, 2)), var=x.var(axis=(0, 2)), weight=args["weight"],
                eps=args["eps"], grad_weight=rng.standard_normal(3).astype(dtype),
                grad_bias=rng.standard_normal(3).astype(dtype), out=np.zeros(x.shape, dtype))


@op("grad, x: (N, C, L); mean, var, weight, grad_weight, grad_bias: (C,); out: (N, C, L); "
    "updates grad_weight, grad_bias",
    example=_bn_backward_example, inplace=("grad_weight", "grad_bias", "out"), rtol32=1e-4,
    atol32=1e-5)
def batch_norm_backward(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out=None):
    """Training mode (mean, var are the batch's own), M = N * L values per channel:
    dL/dx = weight * rstd * (g - sum(g) / M - x_hat * sum(g * x_hat) / M), sums per channel;
    grad_weight += sum(g * x_hat); grad_bias += sum(g)."""
    rstd = _bn_view(1 / np.sqrt(var + eps))
    x_hat = (x - _bn_view(mean)) * rstd
    m = x.shape[0] * x.shape[2]
    sum_g = grad.sum(axis=(0, 2))
    sum_gx = (grad * x_hat).sum(axis=(0, 2))
    w = 1 if weight is None else _bn_view(weight)
    dx = w * rstd * (grad - _bn_view(sum_g) / m - x_hat * _bn_view(sum_gx) / m)
    return _plus(grad_weight, sum_gx), _plus(grad_bias, sum_g), dx


def _bn_backward_eval_example(rng, dtype):
    args = _bn_backward_example(rng, dtype)
    args.update(mean=rng.standard_normal(3).astype(dtype), var=rng.random(3).astype(dtype) + 0.5)
    return args


@op("grad, x: (N, C, L); mean, var, weight, grad_weight, grad_bias: (C,); out: (N, C, L); "
    "updates grad_weight, grad_bias",
    example=_bn_backward_eval_example, inplace=("grad_weight", "grad_bias", "out"))
def batch_norm_backward_eval(grad, x, mean, var, weight, eps, grad_weight, grad_bias, out=None):
    """Evaluation mode (mean, var fixed running statistics, so constants):
    dL/dx = g * weight * rstd; grad_weight += sum(g * x_hat); grad_bias += sum(g)."""
    rstd = _bn_view(1 / np.sqrt(var + eps))
    x_hat = (x - _bn_view(mean)) * rstd
    w = 1 if weight is None else _bn_view(weight)
    return (_plus(grad_weight, (grad * x_hat).sum(axis=(0, 2))),
            _plus(grad_bias, grad.sum(axis=(0, 2))), grad * w * rstd)


@op("running_mean, running_var, mean, var: (C,); updates running_mean, running_var",
    example=lambda rng, dtype: dict(running_mean=rng.standard_normal(3).astype(dtype),
                                    running_var=rng.random(3).astype(dtype) + 0.5,
                                    mean=rng.standard_normal(3).astype(dtype),
                                    var=rng.random(3).astype(dtype), momentum=0.1, count=20),
    inplace=("running_mean", "running_var"))
def batch_norm_update_running(running_mean, running_var, mean, var, momentum, count):
    """PyTorch's update, with the *unbiased* batch variance (count values per channel):
    running_mean = (1 - momentum) running_mean + momentum mean
    running_var  = (1 - momentum) running_var  + momentum var * count / (count - 1)."""
    return ((1 - momentum) * running_mean + momentum * mean,
            (1 - momentum) * running_var + momentum * var * (count / (count - 1)))
