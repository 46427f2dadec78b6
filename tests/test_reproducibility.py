"""tinyar.manual_seed(n) repeats a CPU run bit for bit."""
import numpy as np

import tinyar
from tinyar import nn
from tinyar.nn.loss import CrossEntropyLoss
from tinyar.optim import Adam


def run(seed):
    tinyar.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.LayerNorm(16),
                          nn.Linear(16, 4))
    criterion = CrossEntropyLoss(label_smoothing=0.1)
    opt = Adam(model.parameters(), lr=1e-2)
    rng = tinyar.random.generator()
    losses = []
    for _ in range(20):
        x = rng.standard_normal((8, 6)).astype(np.float32)
        y = rng.integers(0, 4, 8)
        losses.append(criterion(model(x), y))
        model.zero_grad()
        model.backward(criterion.backward())
        opt.step()
    return np.array(losses), model.flat_parameters().data.copy()


def test_same_seed_same_run_bit_for_bit():
    losses_a, params_a = run(7)
    losses_b, params_b = run(7)
    assert np.array_equal(losses_a, losses_b)
    assert np.array_equal(params_a, params_b)


def test_other_seed_other_run():
    losses_a, _ = run(7)
    losses_c, _ = run(8)
    assert not np.array_equal(losses_a, losses_c)
