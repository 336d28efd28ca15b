"""Handwritten digits read row by row, classified by an LSTM, written as one would with Keras.

scikit-learn ships a small real data set, 1,797 handwritten digits of 8x8 pixels (UCI's optical
recognition of handwritten digits). Each image is read as a sequence of 8 rows of 8 pixels: an
LSTM reads the rows top to bottom and a softmax layer names the digit (chance: 10 %). A fifth of
the images is held out as a test set; fit keeps the last 20 % of the rest for validation
(``validation_split``) and stops early when the validation loss stops improving.

    pip install scikit-learn              # or: pip install fusedrnn[examples]
    python examples/sequence_classification.py        # a few seconds on 2 cores
"""

import argparse
import time

import numpy as np

from fusedrnn.keras import Input, Sequential
from fusedrnn.keras.callbacks import EarlyStopping
from fusedrnn.keras.layers import LSTM, Dense
from fusedrnn.keras.utils import set_random_seed


def load_digits_as_sequences(seed):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("this example reads scikit-learn's digits: pip install scikit-learn") from None
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")   # (1797, 8 rows, 8 pixels), pixels in [0, 1]
    y = digits.target
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


def save_plot(path, history):
    try:
        import matplotlib
        matplotlib.use("Agg")   # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install fusedrnn[examples])")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, ("loss", "accuracy")):
        ax.plot(history.history[name], label="training")
        ax.plot(history.history["val_" + name], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.suptitle("LSTM on digits read row by row (fusedrnn.keras)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot saved to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--plot", default="sequence_classification.png", help="PNG path ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    set_random_seed(args.seed)
    x, y = load_digits_as_sequences(args.seed)
    test = len(x) // 5
    x_train, y_train, x_test, y_test = x[test:], y[test:], x[:test], y[:test]
    print(f"{len(x_train)} training and {len(x_test)} test images, as sequences of {x.shape[1]} rows x "
          f"{x.shape[2]} pixels")

    model = Sequential([
        Input(shape=x.shape[1:]),
        LSTM(args.units),
        Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, validation_split=0.2, verbose=2,
                        callbacks=[EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)])
    seconds = time.perf_counter() - start

    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"\ntraining took {seconds:.1f} s ({len(history.epoch)} epochs)")
    print(f"test accuracy {test_accuracy:.3f} (chance 0.100), test loss {test_loss:.3f}")
    if args.plot:
        save_plot(args.plot, history)


if __name__ == "__main__":
    main()
