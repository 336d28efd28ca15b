"""Next-value regression on a noisy sine wave, written as one would write it with Keras.

A SimpleRNN with ``return_sequences=True`` reads windows of a noisy sine wave (random phase and
frequency per window) and predicts, at every step, the next value. The noise (standard deviation
0.1) cannot be predicted, so its variance, 0.01, is the best test MSE possible; repeating the
last value is the naive baseline.

    python examples/sine_regression.py                 # a few seconds on 2 cores
    python examples/sine_regression.py --epochs 40 --plot sine.png

Porting from Keras means changing the imports: ``from keras import ...`` -> ``from fusedrnn.keras import ...``.
"""

import argparse
import time

import numpy as np

from fusedrnn.keras import Input, Sequential
from fusedrnn.keras.layers import Dense, SimpleRNN
from fusedrnn.keras.utils import set_random_seed

NOISE = 0.1


def make_windows(count, steps, rng):
    """(count, steps + 1) noisy sine windows and the clean curves under them."""
    t = np.arange(steps + 1) * 0.2
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    frequency = rng.uniform(0.6, 1.4, (count, 1))
    clean = np.sin(frequency * t + phase)
    return (clean + rng.normal(0, NOISE, clean.shape)).astype("float32"), clean


def save_plot(path, noisy, clean, predicted):
    try:
        import matplotlib
        matplotlib.use("Agg")   # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install fusedrnn[examples])")
        return
    steps = np.arange(len(noisy))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(steps, clean, color="0.6", lw=3, label="clean sine")
    ax.plot(steps, noisy, ".", color="C0", label="noisy input")
    ax.plot(steps[1:], predicted, color="C3", label="predicted next value")
    ax.set_xlabel("step")
    ax.legend()
    ax.set_title("SimpleRNN next-value prediction (fusedrnn.keras)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot saved to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--plot", default="sine_regression.png", help="PNG path ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    series, clean = make_windows(args.samples, args.steps, rng)
    x, y = series[:, :-1, None], series[:, 1:, None]   # at every step, the next value
    test = len(x) // 5
    x_train, y_train, x_test, y_test = x[test:], y[test:], x[:test], y[:test]

    model = Sequential([
        Input(shape=(args.steps, 1)),
        SimpleRNN(args.units, return_sequences=True),
        Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.summary()
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, validation_split=0.2, verbose=2)
    seconds = time.perf_counter() - start

    test_mse, test_mae = model.evaluate(x_test, y_test, verbose=0)
    naive_mse = float(np.mean((x_test - y_test) ** 2))
    print(f"\ntraining took {seconds:.1f} s")
    print(f"test MSE {test_mse:.4f} (noise floor {NOISE ** 2:.4f}; repeating the last value: {naive_mse:.4f}); "
          f"test MAE {test_mae:.4f}")
    if args.plot:
        predicted = model.predict(x_test[:1], verbose=0)[0, :, 0]
        save_plot(args.plot, series[0], clean[0], predicted)


if __name__ == "__main__":
    main()
