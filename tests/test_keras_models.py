"""fusedrnn.keras models without Keras: the public train_step/test_step, and models used as
layers of other models (Sequential and functional), against the same layers written flat.

A nested model computes exactly what its layers do flat, so training from the same weights on
the same batches gives the same history and weights to float32 rounding (1e-6 relative).
"""

import numpy as np
import pytest

import fusedrnn.keras as fk
from fusedrnn.keras import layers

TOL = dict(rtol=1e-6, atol=1e-7)


def regression_data(rng, samples=20):
    x = rng.standard_normal((samples, 5, 3)).astype(np.float32)
    y = rng.standard_normal((samples, 2)).astype(np.float32)
    return x, y


def small_model(metrics=("mae",)):
    model = fk.Sequential([fk.Input((5, 3)), layers.GRU(4), layers.Dense(2)])
    model.compile(optimizer=fk.optimizers.Adam(0.01), loss="mse", metrics=list(metrics))
    return model


def assert_same_weights(got, want, **tol):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, **(tol or TOL))


# -- train_step and test_step ------------------------------------------------------------------------

def test_train_step_is_what_fit_runs_per_batch(rng):
    x, y = regression_data(rng)
    fitted, stepped = small_model(), small_model()
    stepped.set_weights(fitted.get_weights())
    history = fitted.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for start in range(0, len(x), 8):
        logs = stepped.train_step(x[start:start + 8], y[start:start + 8])
    assert sorted(logs) == ["loss", "mae"] and all(isinstance(v, float) for v in logs.values())
    assert logs == pytest.approx({name: values[-1] for name, values in history.history.items()}, rel=1e-6)
    assert_same_weights(stepped.get_weights(), fitted.get_weights(), rtol=0, atol=0)


def test_test_step_is_what_evaluate_runs_per_batch(rng):
    x, y = regression_data(rng)
    model = small_model()
    expected = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    model.reset_metrics()
    for start in range(0, len(x), 8):
        logs = model.test_step(x[start:start + 8], y[start:start + 8])
    assert logs == pytest.approx(expected, rel=1e-12)
    assert [metric.name for metric in model.metrics] == ["loss", "mae"]
    assert model.get_metrics_result() == logs


def test_fit_and_evaluate_call_an_overridden_step(rng):
    calls = []

    class Counting(fk.Sequential):
        def train_step(self, x, y, sample_weight=None):
            calls.append(("train", len(x)))
            return super().train_step(x, y, sample_weight)

        def test_step(self, x, y, sample_weight=None):
            calls.append(("test", len(x)))
            return super().test_step(x, y, sample_weight)

    model = Counting([fk.Input((5, 3)), layers.SimpleRNN(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = regression_data(rng)
    model.fit(x, y, batch_size=8, epochs=1, validation_split=0.2, verbose=0)
    assert calls == [("train", 8), ("train", 8), ("test", 4)]


def test_steps_refuse_what_they_do_not_support(rng):
    x, y = regression_data(rng, samples=4)
    model = fk.Sequential([fk.Input((5, 3)), layers.SimpleRNN(2)])
    with pytest.raises(RuntimeError, match="compile"):
        model.train_step(x, y)
    model.compile(optimizer="sgd", loss="mse")
    for step in (model.train_step, model.test_step, model.train_on_batch, model.test_on_batch):
        with pytest.raises(NotImplementedError, match="sample_weight"):
            step(x, y, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="samples"):
        model.train_step(x, y[:3])
