"""The classic Keras next-value regression on a sine wave, in real Keras 3, on fusedrnn's kernels.

A SimpleRNN reads windows of a noisy sine wave (random phase and frequency per window) and
predicts the value after each window. The noise (standard deviation 0.1) cannot be predicted, so
its variance, 0.01, is the best test MSE possible; repeating the last value is the naive baseline.

This is a plain Keras program; the one fusedrnn line is ``fusedrnn.keras3.enable()`` (``--stock``
leaves it out, to compare). It runs on Keras's torch backend, or on JAX with KERAS_BACKEND=jax:

    python examples/keras3_sine_regression.py
    KERAS_BACKEND=jax python examples/keras3_sine_regression.py --epochs 20
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")   # Keras reads it once, at import

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fusedrnn.keras3  # noqa: E402

NOISE = 0.1


def make_windows(count, steps, rng):
    """(count, steps, 1) noisy sine windows and the next noisy value of each."""
    t = np.arange(steps + 1) * 0.2
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    frequency = rng.uniform(0.6, 1.4, (count, 1))
    wave = (np.sin(frequency * t + phase) + rng.normal(0, NOISE, (count, steps + 1))).astype("float32")
    return wave[:, :-1, None], wave[:, -1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="window length")
    parser.add_argument("--train", type=int, default=4096, help="training windows")
    parser.add_argument("--test", type=int, default=1024, help="test windows")
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--stock", action="store_true", help="Keras's own SimpleRNN loop (no enable())")
    args = parser.parse_args()

    if not args.stock:
        fusedrnn.keras3.enable()   # the one added line
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_train, y_train = make_windows(args.train, args.steps, rng)
    x_test, y_test = make_windows(args.test, args.steps, rng)

    model = keras.Sequential([
        keras.Input((args.steps, 1)),
        keras.layers.SimpleRNN(args.units),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, validation_split=0.1, verbose=2)
    seconds = time.perf_counter() - start
    test_mse = model.evaluate(x_test, y_test, verbose=0)
    baseline = float(np.mean((x_test[:, -1] - y_test) ** 2))
    print(f"{keras.backend.backend()} backend, {'Keras loop' if args.stock else 'fusedrnn kernels'}: "
          f"fit {seconds:.1f} s")
    print(f"test MSE {test_mse:.4f} (noise floor {NOISE ** 2:.4f}, repeat-last-value baseline {baseline:.4f})")


if __name__ == "__main__":
    main()
