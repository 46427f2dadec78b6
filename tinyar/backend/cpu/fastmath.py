"""Scalar math that LLVM can vectorise.

The pip builds of llvmlite have no SVML, so ``math.tanh`` and ``math.exp``
compile to scalar libm calls that do not vectorise (1e7 float32 tanh: NumPy
64 ms, Numba ``math.tanh`` 298 ms). For float32 we use a rational
approximation instead (the one Eigen uses: tanh(x) ~ x P(x^2) / Q(x^2) on
[-7.9, 7.9]), which vectorises: 32 ms for 1e7, max abs error 2.6e-7 on
float32 inputs (a few ulp of 1), relative error ~2e-7 near 0. float64, which
the gradient checks use, keeps the exact libm functions.

Two more helpers serve the softmax and loss row loops:

``maxnum(a, b)``
    LLVM's ``maxnum``: max that ignores a NaN operand. A plain
    ``if x > m: m = x`` loop does not vectorise unless NaNs are ruled out
    (1120 x 10,000 float32: 12 ms; with ``maxnum``: 1.6 ms, as fast as
    NumPy). A NaN in a row is not lost: ``exp(NaN - m)`` is NaN, so the sum,
    the softmax and the loss still come out NaN.
``fast_exp(x)``
    The pip builds of llvmlite have no SVML, so ``math.exp`` on float32 is a
    scalar libm call (~3 ns). For float32 we use the Cephes ``expf``
    polynomial instead, exp(x) = 2^n p(x - n ln2), which LLVM vectorises;
    its error is ~1 ulp over the normal range, 0 below exp(-87.5) (where
    libm gives subnormals), inf above 88.72, NaN for NaN. float64, which the
    gradient checks use, keeps libm's exact ``math.exp``.

``fast_erf(x)``
    ``math.erf`` is a scalar libm call too (GELU over a GPT's (768, 512) MLP
    activations: 3.4 ms, the largest kernel of its step). For float32, the
    rational approximation Eigen and XLA use, erf(x) ~ x P(x^2) / Q(x^2) on
    [-4, 4] (erf rounds to +-1 beyond), which vectorises (1e7 float32: 27 ms
    against 126 ms for libm's); max abs error 3.3e-7, a few ulp of 1 (``tests/backend/test_fastmath.py`` measures it against libm).
    float64 keeps libm's exact ``math.erf``.

``fast_tanh``, ``fast_sigmoid``, ``fast_exp`` and ``fast_erf`` pick their implementation by the type of
their argument when a kernel is compiled, so one kernel source serves both
dtypes.
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

_TANH_CLAMP = 7.90531110763549805


def fast_tanh(x):
    return math.tanh(x)


def fast_sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _tanh32(x):
    f = np.float32
    x = max(f(-_TANH_CLAMP), min(f(_TANH_CLAMP), x))
    x2 = x * x
    p = x2 * f(-2.76076847742355e-16) + f(2.00018790482477e-13)
    p = x2 * p + f(-8.60467152213735e-11)
    p = x2 * p + f(5.12229709037114e-08)
    p = x2 * p + f(1.48572235717979e-05)
    p = x2 * p + f(6.37261928875436e-04)
    p = x2 * p + f(4.89352455891786e-03)
    q = x2 * f(1.19825839466702e-06) + f(1.18534705686654e-04)
    q = x2 * q + f(2.26843463243900e-03)
    q = x2 * q + f(4.89352518554385e-03)
    return x * p / q


def _is_float32(x):
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(fast_tanh, jit_options={"fastmath": True})
def _overload_tanh(x):
    if _is_float32(x):
        return _tanh32

    def exact(x):
        return math.tanh(x)
    return exact


@overload(fast_sigmoid, jit_options={"fastmath": True})
def _overload_sigmoid(x):
    if _is_float32(x):
        def sigmoid32(x):
            # sigmoid(x) = (1 + tanh(x / 2)) / 2
            return np.float32(0.5) * fast_tanh(np.float32(0.5) * x) + np.float32(0.5)
        return sigmoid32

    def exact(x):
        if x >= 0:
            return 1.0 / (1.0 + math.exp(-x))
        e = math.exp(x)
        return e / (1.0 + e)
    return exact


@intrinsic
def maxnum(typingctx, a, b):
    """max(a, b) as LLVM's ``llvm.maxnum`` (NaN operands are ignored)."""
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        t = args[0].type
        name = "llvm.maxnum.f32" if isinstance(t, ir.FloatType) else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t]), name)
        return builder.call(fn, args)

    return a(a, b), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the low 32 bits of an integer."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif bits.bitwidth < 32:
            value = builder.sext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


def fast_exp(x):
    return math.exp(x)


def _exp32(x):
    f = np.float32
    # n = round(x / ln 2) from a clamped copy (a NaN or huge x must not reach
    # the float -> int conversion); r = x - n ln2 in two steps (Cody-Waite),
    # |r| <= ln2 / 2, where a degree-6 polynomial is accurate to ~1 ulp.
    xc = x if x > f(-88.0) else f(-88.0)
    xc = xc if xc < f(88.3) else f(88.3)
    n = np.floor(xc * f(1.44269504088896341) + f(0.5))
    r = x - n * f(0.693359375)
    r = r - n * f(-2.12194440e-4)
    p = f(1.9875691500e-4)
    p = p * r + f(1.3981999507e-3)
    p = p * r + f(8.3334519073e-3)
    p = p * r + f(4.1665795894e-2)
    p = p * r + f(1.6666665459e-1)
    p = p * r + f(5.0000001201e-1)
    p = p * r * r + r + f(1.0)
    two_to_n = _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
    return f(0.0) if x < f(-87.5) else p * two_to_n


# no "reassoc" here: it would let LLVM merge the two steps of r = x - n ln2
@overload(fast_exp, jit_options={"fastmath": {"contract"}})
def _overload_exp(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return _exp32

    def exact(x):
        return math.exp(x)
    return exact


def fast_erf(x):
    return math.erf(x)


def _erf32(x):
    f = np.float32
    x = max(f(-4.0), min(f(4.0), x))
    x2 = x * x
    p = x2 * f(-2.72614225801306e-10) + f(2.77068142495902e-08)
    p = x2 * p + f(-2.10102402082508e-06)
    p = x2 * p + f(-5.69250639462346e-05)
    p = x2 * p + f(-7.34990630326855e-04)
    p = x2 * p + f(-2.95459980854025e-03)
    p = x2 * p + f(-1.60960333262415e-02)
    q = x2 * f(-1.45660718464996e-05) + f(-2.13374055278905e-04)
    q = x2 * q + f(-1.68282697438203e-03)
    q = x2 * q + f(-7.37332916720468e-03)
    q = x2 * q + f(-1.42647390514189e-02)
    return x * p / q


@overload(fast_erf, jit_options={"fastmath": True})
def _overload_erf(x):
    if _is_float32(x):
        return _erf32

    def exact(x):
        return math.erf(x)
    return exact
