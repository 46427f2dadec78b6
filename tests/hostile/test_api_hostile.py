"""API misuse of every layer and model: a one-line TinyarError naming the layer, never a raw
traceback from a kernel or a silently wrong gradient.

Parametrized over every layer class ``tinyar.nn`` exports (the table below must list them
all: a new layer without a case fails ``test_every_layer_has_a_case``): bad constructor
arguments, backward before forward, gradients of the wrong shape, type or count; and
``AutoregressiveLM.generate`` with bad sampling options.
"""
import inspect
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinyar
from tinyar import nn
from tinyar.data.hierarchy import ClassHierarchy
from tinyar.errors import (CheckpointError, ConfigError, DTypeError, ShapeError, TargetError,
                           TinyarError)
from tinyar.models import AutoregressiveLM, CNNClassifier, RowRNNClassifier
from tinyar.nn.causal_conv import CausalConvStack, GatedActivation, ResidualBlock

HIERARCHY = ClassHierarchy.from_counts(np.arange(1, 13), 4)
NAN, INF = float("nan"), float("inf")

# --- bad values, by the kind of argument ---------------------------------------------------
SIZES = [0, -1, -(2**40), 2.5, 3.0, "3", None, True, 2**31, [3], np.float32(3)]
PROB_OPEN = [-0.1, 1.0, 1.5, NAN, INF, "0.5", None, True]       # [0, 1)
PROB_CLOSED = [-0.1, 1.01, NAN, INF, -INF, "0.5", None, True]  # [0, 1]
REALS = [NAN, INF, -INF, "0.1", None, True, [0.1]]
POSITIVE = [0.0, -1e-3] + REALS
FLAGS = ["yes", "False", 2, -1, None, [True]]
CHOICES = ["nope", "", 3, None, ["relu"]]
DTYPES = [np.int32, np.float16, np.complex64, "bogus", object, bool]
KERNELS = [0, -1, 2.5, "3", None, True, (3, 0), (3, 3, 3), [0]]


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _case(cls, defaults, bad, inputs, make=None):
    """A layer: how to build it (defaults, overridable), its bad arguments, and inputs."""
    return dict(cls=cls, defaults=defaults, bad=bad, inputs=inputs,
                make=make or (lambda **kw: cls(**dict(defaults, **kw))))


RECURRENT_BAD = dict(input_size=SIZES, hidden_size=SIZES, num_layers=SIZES, bias=FLAGS,
                     batch_first=FLAGS, dropout=PROB_OPEN, dtype=DTYPES)
CELL_BAD = dict(input_size=SIZES, hidden_size=SIZES, bias=FLAGS, dtype=DTYPES)
POOL_BAD = dict(kernel_size=KERNELS, stride=[0, -1, 2.5, "2", (1, 0)],
                padding=[-1, 2.5, "1", (0, -1), 2])
CONV_BAD = dict(in_channels=SIZES, out_channels=SIZES, kernel_size=KERNELS,
                stride=[0, -1, 2.5, "1", (1, 0)], dilation=[0, -1, 2.5, (0, 1)],
                padding=[-1, 2.5, "full", None, (1, -1)], groups=[0, -1, 2.5, 3, "1"],
                bias=FLAGS, dtype=DTYPES, activation=["tanh", "", 3, "ReLU"])
NORM_BAD = dict(num_features=SIZES, eps=POSITIVE, momentum=[-0.1, 1.01, NAN, INF, "0.1", True],
                affine=FLAGS,
                track_running_stats=FLAGS, dtype=DTYPES)
LOSS_WEIGHTS = [[-1.0, 1.0, 1.0], [NAN, 1.0, 1.0], [INF, 1, 1], ["a", "b", "c"],
                [[1.0, 2.0]], [1 + 1j, 1, 1]]

CASES = {
    "Linear": _case(nn.Linear, dict(in_features=4, out_features=3),
                    dict(in_features=SIZES, out_features=SIZES, bias=FLAGS, dtype=DTYPES),
                    lambda r: (f32(r, 2, 4),)),
    "ReLU": _case(nn.ReLU, {}, {}, lambda r: (f32(r, 2, 3),)),
    "Tanh": _case(nn.Tanh, {}, {}, lambda r: (f32(r, 2, 3),)),
    "Sigmoid": _case(nn.Sigmoid, {}, {}, lambda r: (f32(r, 2, 3),)),
    "GELU": _case(nn.GELU, {}, {}, lambda r: (f32(r, 2, 3),)),
    "LeakyReLU": _case(nn.LeakyReLU, {}, dict(negative_slope=REALS), lambda r: (f32(r, 2, 3),)),
    "Softmax": _case(nn.Softmax, {}, dict(dim=["1", 1.5, None, 100, -100]),
                     lambda r: (f32(r, 2, 3),)),
    "LogSoftmax": _case(nn.LogSoftmax, {}, dict(dim=["1", 1.5, None, 100, -100]),
                        lambda r: (f32(r, 2, 3),)),
    "Flatten": _case(nn.Flatten, {}, dict(start_dim=["1", 1.5, None, 100],
                                          end_dim=["-1", 0.5, None, -100]),
                     lambda r: (f32(r, 2, 3, 2),)),
    "LayerNorm": _case(nn.LayerNorm, dict(normalized_shape=3),
                       dict(normalized_shape=[0, -1, (3, 0), "3", None, 2.5, (), [3.0]],
                            eps=POSITIVE, elementwise_affine=FLAGS, bias=FLAGS, dtype=DTYPES),
                       lambda r: (f32(r, 2, 3),)),
    "BatchNorm1d": _case(nn.BatchNorm1d, dict(num_features=3), NORM_BAD,
                         lambda r: (f32(r, 4, 3),)),
    "BatchNorm2d": _case(nn.BatchNorm2d, dict(num_features=2), NORM_BAD,
                         lambda r: (f32(r, 2, 2, 3, 3),)),
    "Embedding": _case(nn.Embedding, dict(num_embeddings=7, embedding_dim=3),
                       dict(num_embeddings=SIZES, embedding_dim=SIZES,
                            padding_idx=[7, -8, 2.5, "0", True, [1]], dtype=DTYPES),
                       lambda r: (r.integers(0, 7, (2, 4)),)),
    "Dropout": _case(nn.Dropout, dict(p=0.3), dict(p=PROB_CLOSED), lambda r: (f32(r, 3, 4),)),
    "Dropout2d": _case(nn.Dropout2d, dict(p=0.3), dict(p=PROB_CLOSED),
                       lambda r: (f32(r, 2, 3, 3, 3),)),
    "CrossEntropyLoss": _case(nn.CrossEntropyLoss, dict(reduction="none"),
                              dict(reduction=CHOICES, ignore_index=[2.5, "1", None, True, 2**70],
                                   label_smoothing=PROB_CLOSED, weight=LOSS_WEIGHTS),
                              lambda r: (f32(r, 4, 3), r.integers(0, 3, 4))),
    "NLLLoss": _case(nn.NLLLoss, dict(reduction="none"),
                     dict(reduction=CHOICES, ignore_index=[2.5, "1", None], weight=LOSS_WEIGHTS),
                     lambda r: (f32(r, 4, 3), r.integers(0, 3, 4))),
    "MSELoss": _case(nn.MSELoss, dict(reduction="none"), dict(reduction=CHOICES),
                     lambda r: (f32(r, 3, 4), f32(r, 3, 4))),
    "BCEWithLogitsLoss": _case(nn.BCEWithLogitsLoss, dict(reduction="none"),
                               dict(reduction=CHOICES, pos_weight=LOSS_WEIGHTS),
                               lambda r: (f32(r, 3, 3), r.random((3, 3)).astype(np.float32))),
    "MultiLevelSoftmax": _case(nn.MultiLevelSoftmax, dict(in_features=5, hierarchy=HIERARCHY),
                               dict(in_features=SIZES, dtype=DTYPES, level_weights=[
                                   (0, 0), (-1, 1), (NAN, 1), (1,), "1,1", None, 3]),
                               lambda r: (f32(r, 6, 5), r.integers(0, 12, 6))),
    "FlatSoftmaxHead": _case(nn.FlatSoftmaxHead, dict(in_features=5, num_labels=12),
                             dict(in_features=SIZES, num_labels=SIZES, bias=FLAGS, dtype=DTYPES,
                                  tied_weight=[np.zeros((12, 5)), nn.Parameter(np.zeros(3))]),
                             lambda r: (f32(r, 6, 5), r.integers(0, 12, 6))),
    "MultiLevelClassifier": _case(nn.MultiLevelClassifier,
                                  dict(in_features=5, hierarchy=HIERARCHY),
                                  dict(in_features=SIZES, level_weights=[(0, 0), (1, INF)]),
                                  lambda r: (f32(r, 6, 5), r.integers(0, 12, 6))),
    "RNN": _case(nn.RNN, dict(input_size=3, hidden_size=4),
                 dict(RECURRENT_BAD, nonlinearity=CHOICES + ["sigmoid"]),
                 lambda r: (f32(r, 2, 5, 3),)),
    "LSTM": _case(nn.LSTM, dict(input_size=3, hidden_size=4), RECURRENT_BAD,
                  lambda r: (f32(r, 2, 5, 3),)),
    "GRU": _case(nn.GRU, dict(input_size=3, hidden_size=4), RECURRENT_BAD,
                 lambda r: (f32(r, 2, 5, 3),)),
    "RNNCell": _case(nn.RNNCell, dict(input_size=3, hidden_size=4),
                     dict(CELL_BAD, nonlinearity=CHOICES), lambda r: (f32(r, 2, 3),)),
    "LSTMCell": _case(nn.LSTMCell, dict(input_size=3, hidden_size=4), CELL_BAD,
                      lambda r: (f32(r, 2, 3),)),
    "GRUCell": _case(nn.GRUCell, dict(input_size=3, hidden_size=4), CELL_BAD,
                     lambda r: (f32(r, 2, 3),)),
    "LastStep": _case(nn.LastStep, {}, {}, lambda r: (f32(r, 2, 5, 3),),
                      make=lambda: nn.LastStep(nn.GRU(3, 4))),
    "Conv2d": _case(nn.Conv2d, dict(in_channels=2, out_channels=4, kernel_size=3, padding=1),
                    CONV_BAD, lambda r: (f32(r, 2, 2, 5, 5),)),
    "Conv1d": _case(nn.Conv1d, dict(in_channels=2, out_channels=4, kernel_size=3, padding=1),
                    dict(CONV_BAD, kernel_size=[0, -1, 2.5, "3", None, (3, 3)],
                         padding=[-1, 2.5, "left", None, (1, 1)]),
                    lambda r: (f32(r, 2, 2, 6),)),
    "MaxPool2d": _case(nn.MaxPool2d, dict(kernel_size=2), POOL_BAD,
                       lambda r: (f32(r, 2, 2, 4, 4),)),
    "MaxPool1d": _case(nn.MaxPool1d, dict(kernel_size=2),
                       dict(kernel_size=[0, -1, 2.5, "2", None, (2, 2)],
                            stride=[0, -1, 2.5, "2"], padding=[-1, 2.5, "1", 2]),
                       lambda r: (f32(r, 2, 2, 6),)),
    "AvgPool2d": _case(nn.AvgPool2d, dict(kernel_size=2), POOL_BAD,
                       lambda r: (f32(r, 2, 2, 4, 4),)),
    "AdaptiveAvgPool2d": _case(nn.AdaptiveAvgPool2d, dict(output_size=1),
                               dict(output_size=[0, -1, 2.5, "1", (1, 2, 3), (0, 1), [1.0, 1]]),
                               lambda r: (f32(r, 2, 2, 3, 3),)),
    "Sequential": _case(nn.Sequential, {}, {}, lambda r: (f32(r, 2, 4),),
                        make=lambda: nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))),
    # not exported by tinyar.nn, but layers all the same
    "CausalConvStack": _case(CausalConvStack, dict(input_size=3, channels=4, num_layers=2),
                             dict(input_size=SIZES, channels=SIZES, num_layers=SIZES,
                                  kernel_size=SIZES, dtype=DTYPES,
                                  dilations=[[1], [0, 1], "12", 3, [1.5, 2]]),
                             lambda r: (f32(r, 2, 5, 3),)),
    "ResidualBlock": _case(ResidualBlock, dict(channels=4, kernel_size=2, dilation=1),
                           dict(channels=SIZES, kernel_size=SIZES, dilation=SIZES, dtype=DTYPES),
                           lambda r: (f32(r, 2, 4, 5),)),
    "GatedActivation": _case(GatedActivation, {}, {}, lambda r: (f32(r, 2, 4, 5),)),
    "CausalSelfAttention": _case(nn.CausalSelfAttention, dict(embed_dim=4, num_heads=2),
                                 dict(embed_dim=SIZES, num_heads=SIZES + [3], bias=FLAGS,
                                      dropout=PROB_CLOSED, dtype=DTYPES),
                                 lambda r: (f32(r, 2, 5, 4),)),
    "TransformerBlock": _case(nn.TransformerBlock, dict(embed_dim=4, num_heads=2),
                              dict(embed_dim=SIZES, num_heads=SIZES + [3], mlp_ratio=SIZES,
                                   dropout=PROB_CLOSED, activation=CHOICES, bias=FLAGS,
                                   dtype=DTYPES),
                              lambda r: (f32(r, 2, 5, 4),)),
    "TransformerStack": _case(nn.TransformerStack, dict(embed_dim=4, num_layers=2, num_heads=2,
                                                        context=6),
                              dict(embed_dim=SIZES, num_layers=SIZES, num_heads=SIZES + [3],
                                   context=SIZES, dropout=PROB_CLOSED, activation=CHOICES,
                                   dtype=DTYPES),
                              lambda r: (f32(r, 2, 5, 4),)),
}


def test_every_layer_has_a_case():
    exported = {name for name, obj in vars(nn).items()
                if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj is not nn.Module}
    assert exported <= set(CASES), f"add a case for {sorted(exported - set(CASES))}"


def assert_one_line(info, *parts):
    message = str(info.value)
    assert message and "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)


# --- constructors -------------------------------------------------------------------------------
BAD_ARGUMENTS = [(name, argument, value) for name, case in CASES.items()
                 for argument, values in case["bad"].items() for value in values]


@pytest.mark.parametrize("name, argument, value", BAD_ARGUMENTS,
                         ids=[f"{n}-{a}-{v!r}"[:60] for n, a, v in BAD_ARGUMENTS])
def test_bad_constructor_arguments_are_one_line_errors_naming_the_layer(name, argument, value):
    case = CASES[name]
    with pytest.raises(TinyarError) as info:
        case["make"](**{argument: value})
    assert isinstance(info.value, (ConfigError, DTypeError, ShapeError)), info.value
    owner = name if name != "MultiLevelClassifier" else "MultiLevel"
    assert_one_line(info, owner)


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c["defaults"]))
def test_the_defaults_of_each_case_are_valid(name):
    CASES[name]["make"]()


@pytest.mark.parametrize("make, error", [
    (lambda: nn.Sequential(nn.ReLU(), 3), "item 1 is a int"),
    (lambda: nn.LastStep(nn.Linear(2, 2)), "RNN, LSTM or GRU"),
    (lambda: nn.MultiLevelSoftmax(4, [0, 1]), "ClassHierarchy"),
    (lambda: nn.MultiLevelClassifier(4, HIERARCHY, schedule="0:1,1"), "LevelWeightSchedule"),
    (lambda: AutoregressiveLM(12, hierarchy="tree"), "ClassHierarchy"),
    (lambda: CNNClassifier([0, 1], (1, 12, 12)), "ClassHierarchy")])
def test_objects_of_the_wrong_kind_are_type_errors_naming_the_layer(make, error):
    with pytest.raises(TypeError, match=error) as info:
        make()
    assert_one_line(info)


@pytest.mark.parametrize("milestones", [3, "0:1,1", [(0,)], [(0, (1, 1, 1))], [("a", (1, 1))],
                                        [(-1, (1, 1)), (0, (1, 1))], [(0, (NAN, 1))], []])
def test_level_weight_schedules_are_checked(milestones):
    with pytest.raises(ConfigError) as info:
        nn.LevelWeightSchedule(milestones)
    assert_one_line(info, "LevelWeightSchedule")


# --- backward ---------------------------------------------------------------------------------
def _forward(name, rng):
    layer = CASES[name]["make"]()
    out = layer(*CASES[name]["inputs"](rng))
    return layer, out


def _output(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_before_forward_is_refused(name, rng):
    layer = CASES[name]["make"]()
    grad = np.ones((2, 3), np.float32)
    for call in (lambda: layer.backward(grad), lambda: layer.backward()):
        with pytest.raises(TinyarError, match="backward called before forward") as info:
            call()
        assert_one_line(info, type(layer).__name__)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("bad", ["x", None, [[1.0, 2.0]]], ids=repr)
def test_backward_after_a_failed_forward_is_refused(name, bad, rng):
    """A forward that raised (on input that is not an array) left nothing consistent to go
    back through, even after an earlier forward that succeeded."""
    layer, out = _forward(name, rng)
    with pytest.raises(TinyarError) as info:
        layer(*[bad for _ in CASES[name]["inputs"](rng)])
    assert_one_line(info)
    with pytest.raises(TinyarError, match="backward called before forward"):
        layer.backward(np.ones_like(_output(out)) if np.ndim(_output(out)) else 1.0)


def _wrong_shapes(shape):
    """Shapes that differ from ``shape`` in every way a caller could get it wrong."""
    shape = tuple(shape)
    if not shape:
        return [(1,), (3,), (1, 1)]
    out = {shape + (1,), shape + (2,), shape[:-1], shape[::-1] if len(set(shape)) > 1 else None}
    for axis in range(len(shape)):
        for delta in (-1, 1):
            if shape[axis] + delta >= 0:
                out.add(shape[:axis] + (shape[axis] + delta,) + shape[axis + 1:])
    out.discard(None)
    out.discard(shape)
    return sorted(out)


OUTPUT_SHAPES = {name: tuple(np.shape(_output(_forward(name, np.random.default_rng(0))[1])))
                 for name in CASES}
WRONG_GRADS = [(name, shape) for name in sorted(CASES) for shape in
               _wrong_shapes(OUTPUT_SHAPES[name])]
ARRAY_OUTPUT = sorted(name for name, shape in OUTPUT_SHAPES.items() if shape)


@pytest.mark.parametrize("name, shape", WRONG_GRADS, ids=[f"{n}-{s}" for n, s in WRONG_GRADS])
def test_a_gradient_of_another_shape_is_refused_naming_both(name, shape, rng):
    layer, out = _forward(name, rng)
    expected = tuple(np.shape(_output(out)))
    with pytest.raises(ShapeError) as info:
        layer.backward(np.ones(shape, np.float32))
    assert_one_line(info, type(layer).__name__, str(tuple(shape)))
    if expected:  # a layer with an array output names it; a loss says "a number"
        assert str(expected) in str(info.value)
    # the refused call changed nothing: the right gradient still goes through
    layer.zero_grad()
    layer.backward(np.ones(expected, np.float32) if expected else 1.0)


@pytest.mark.parametrize("name", ARRAY_OUTPUT)
@pytest.mark.parametrize("kind", ["int", "bool", "list", "none", "str"])
def test_a_gradient_that_is_not_a_float_array_is_refused(name, kind, rng):
    layer, out = _forward(name, rng)
    y = _output(out)
    grad = {"int": np.ones(y.shape, np.int64), "bool": np.ones(y.shape, bool),
            "list": np.ones(y.shape).tolist(), "none": None, "str": "ones"}[kind]
    if kind == "none" and layer.accepts_no_grad:
        layer.backward(grad)  # the cells read None as zeros, as documented
        return
    with pytest.raises((ShapeError, DTypeError)) as info:
        layer.backward(grad)
    assert_one_line(info, type(layer).__name__)


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items()
                                        if getattr(c["cls"], "single_backward", False)))
def test_a_second_backward_after_one_forward_is_refused(name, rng):
    layer, out = _forward(name, rng)
    grad = np.ones_like(_output(out))
    layer.backward(grad)
    with pytest.raises(TinyarError, match="twice") as info:
        layer.backward(grad)
    assert_one_line(info, type(layer).__name__)
    layer(*CASES[name]["inputs"](rng))
    layer.backward(grad)  # a new forward makes it possible again


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(ARRAY_OUTPUT),
       shape=st.lists(st.integers(0, 7), min_size=0, max_size=5))
def test_any_generated_gradient_shape_is_accepted_only_when_it_is_the_outputs(name, shape):
    layer, out = _forward(name, np.random.default_rng(0))
    expected = tuple(_output(out).shape)
    grad = np.ones(shape, np.float32)
    if tuple(shape) == expected:
        layer.backward(grad)
    else:
        with pytest.raises(ShapeError):
            layer.backward(grad)


def test_layers_that_call_their_parents_forward_are_checked_once(rng):
    """MaxPool1d and BatchNorm2d run MaxPool2d's and BatchNorm1d's code on a reshaped view:
    their own output shape is what a gradient is compared with."""
    for layer, x in ((nn.MaxPool1d(2), f32(rng, 2, 3, 6)),
                     (nn.BatchNorm2d(3), f32(rng, 4, 3, 2, 2))):
        y = layer(x)
        assert layer.backward(np.ones_like(y)).shape == x.shape


# --- loading a state dict by hand ---------------------------------------------------------------
@pytest.mark.parametrize("value, match", [
    (np.full((4, 3), np.nan, np.float32), "12 NaN or infinite"),
    (np.ones((4, 3), np.int64), "int64"), (np.ones((4, 3), bool), "bool"),
    (np.ones((4, 3), np.complex64), "complex64"), (np.full((4, 3), 1e300), "largest float32"),
    (np.ones((3, 4), np.float32), r"shape \(3, 4\)")])
def test_load_state_dict_by_hand_checks_values_and_changes_nothing(value, match):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    state = model.state_dict()
    before = {k: v.copy() for k, v in state.items()}
    state["1.bias"] = np.full(4, 7.0, np.float32)  # a valid change, not applied either
    state["0.weight"] = value
    with pytest.raises(CheckpointError, match=match) as info:
        model.load_state_dict(state)
    assert_one_line(info, "'0.weight'")
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(array, before[name])


def test_a_negative_count_or_variance_is_refused():
    model = nn.BatchNorm1d(3)
    for name, value in (("num_batches_tracked", np.array(-1)),
                        ("running_var", np.array([1.0, -2.0, 1.0], np.float32))):
        state = model.state_dict()
        state[name] = value
        with pytest.raises(CheckpointError, match=name):
            model.load_state_dict(state)


# --- generate -----------------------------------------------------------------------------------
V = 9


def small_lm(head="flat"):
    hierarchy = ClassHierarchy.from_counts(np.arange(1, V + 1), 3) if head == "multilevel" \
        else None
    return AutoregressiveLM(V, 4, 5, 1, head=head, hierarchy=hierarchy)


@pytest.mark.parametrize("head", ["flat", "multilevel"])
@pytest.mark.parametrize("option, value", [
    ("temperature", -1), ("temperature", -1e-9), ("temperature", NAN), ("temperature", INF),
    ("temperature", -INF), ("temperature", "1"), ("temperature", None), ("temperature", [1]),
    ("top_k", 0), ("top_k", -1), ("top_k", V + 1), ("top_k", 10**9), ("top_k", 2.5),
    ("top_k", "3"), ("top_k", True), ("max_new_tokens", -1), ("max_new_tokens", 2.5),
    ("max_new_tokens", "3"), ("max_new_tokens", None)])
def test_generate_refuses_bad_sampling_options(head, option, value):
    model = small_lm(head)
    kwargs = dict(max_new_tokens=3, temperature=1.0, top_k=None)
    kwargs[option] = value
    with pytest.raises(ValueError) as info:
        model.generate([1, 2], **kwargs)
    assert_one_line(info, option)


@pytest.mark.parametrize("prompt, error", [
    ([-1], TargetError), ([V], TargetError), ([1, 10**12], TargetError), ([], ShapeError),
    ([[1, 2]], ShapeError), ([1.5], TargetError), (["a"], TargetError),
    (np.array([1, 2], np.float32), TargetError)])
def test_generate_refuses_prompts_outside_the_vocabulary(prompt, error):
    with pytest.raises(error) as info:
        small_lm().generate(prompt, 3)
    assert isinstance(info.value, ValueError)
    assert_one_line(info, "prompt")


@pytest.mark.parametrize("head", ["flat", "multilevel"])
def test_generate_accepts_the_edges(head):
    model = small_lm(head)
    greedy = model.generate([1, 2], 5, temperature=0)
    # a tiny temperature is greedy too, not NaN from inf - inf
    np.testing.assert_array_equal(model.generate([1, 2], 5, temperature=1e-300), greedy)
    for top_k in (1, V):
        out = model.generate(np.array([3], np.int32), 4, temperature=1e6, top_k=top_k)
        assert out.shape == (5,) and ((0 <= out) & (out < V)).all()
    assert model.generate([1], 0).tolist() == [1]


@pytest.mark.parametrize("temperature, top_k", [(-1, None), (NAN, None), (INF, None),
                                                ("1", None), (None, None), (1.0, 0),
                                                (1.0, -3), (1.0, 2.5), (1.0, True), (1.0, "2")])
def test_sampling_refuses_bad_options_for_every_caller(temperature, top_k):
    from tinyar.nn.sampling import sample_from_log_probs
    with pytest.raises(ConfigError) as info:
        sample_from_log_probs(np.zeros((2, 5)), temperature, top_k)
    assert_one_line(info, "sampling")
    with pytest.raises(ConfigError):
        nn.MultiLevelSoftmax(5, HIERARCHY).sample(np.zeros((2, 5), np.float32), temperature,
                                                  top_k)


def test_sampling_refuses_nan_scores():
    from tinyar.nn.sampling import sample_from_log_probs
    scores = np.zeros((3, 4))
    scores[1, 2] = np.nan
    with pytest.raises(tinyar.NumericalError, match="1 of 3 rows"):
        sample_from_log_probs(scores)


@pytest.mark.parametrize("target", [np.int32, np.float16, np.complex64, 3, object, None])
def test_module_to_refuses_dtypes_it_cannot_hold(target):
    with pytest.raises(DTypeError) as info:
        nn.Linear(2, 2).to(target)
    assert_one_line(info, "Module.to")


# --- models' constructors ---------------------------------------------------------------------
@pytest.mark.parametrize("argument, values", [
    ("vocab_size", SIZES), ("embed_dim", SIZES), ("hidden_size", SIZES), ("num_layers", SIZES),
    ("kernel_size", SIZES), ("cell", CHOICES), ("head", CHOICES), ("backbone", CHOICES),
    ("dropout", PROB_OPEN), ("tie_weights", FLAGS), ("dtype", DTYPES)])
def test_language_model_arguments_are_checked(argument, values):
    for value in values:
        with pytest.raises(TinyarError) as info:
            AutoregressiveLM(**dict(dict(vocab_size=V, embed_dim=4, hidden_size=5, num_layers=1,
                                         head="flat"), **{argument: value}))
        assert_one_line(info, "AutoregressiveLM")
        if argument != "dtype":
            assert argument in str(info.value)


@pytest.mark.parametrize("make", [
    lambda **kw: CNNClassifier(HIERARCHY, **dict(dict(image_shape=(1, 12, 12)), **kw)),
    lambda **kw: RowRNNClassifier(HIERARCHY, **dict(dict(image_shape=(1, 12, 12), hidden=4),
                                                    **kw))])
@pytest.mark.parametrize("argument, value", [
    ("image_shape", (1, 12)), ("image_shape", (0, 12, 12)), ("image_shape", "1x12x12"),
    ("image_shape", 12), ("image_shape", (1, 12, 12.5)), ("head", "tree"),
    ("level_weights", (0, 0)), ("level_weights", (1, NAN)), ("schedule", "0:1,1"),
    ("schedule", [(1, (1, 1))])])
def test_classifier_arguments_are_checked(make, argument, value):
    with pytest.raises(ConfigError) as info:
        make(**{argument: value})
    assert_one_line(info, "Classifier")


def test_lenet_refuses_images_too_small_and_each_classifier_its_own_options():
    with pytest.raises(ConfigError, match="too small"):
        CNNClassifier(HIERARCHY, (1, 8, 8))
    with pytest.raises(ConfigError, match="arch"):
        CNNClassifier(HIERARCHY, (1, 12, 12), arch="resnet")
    for argument, value in (("hidden", 0), ("layers", -1), ("cell", "lstm2")):
        with pytest.raises(ConfigError, match=argument):
            RowRNNClassifier(HIERARCHY, (1, 12, 12), **{argument: value})


def test_the_message_format_is_the_conventions():
    with pytest.raises(ConfigError) as info:
        nn.Linear(0, 3)
    assert str(info.value) == "Linear: in_features must be an integer >= 1, got 0"
    layer = nn.Linear(4, 3)
    with pytest.raises(TinyarError) as info:
        layer.backward(np.ones((2, 3), np.float32))
    assert str(info.value) == ("Linear(in_features=4, out_features=3, bias=True): backward "
                               "called before forward")
    layer(np.ones((2, 4), np.float32))
    with pytest.raises(ShapeError) as info:
        layer.backward(np.ones((2, 4), np.float32))
    assert str(info.value) == ("Linear(in_features=4, out_features=3, bias=True): expected a "
                               "gradient of the output's shape (2, 3), got (2, 4)")
    assert math.isfinite(float(np.abs(layer.backward(np.ones((2, 3), np.float32))).sum()))
