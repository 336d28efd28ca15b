"""One-year-ahead forecasts of the yearly sunspot number with a GRU, written as one would with Keras.

statsmodels ships the yearly mean sunspot numbers of 1700-2008 (309 values, an ~11-year cycle
of varying height). A GRU reads the last ``--window`` years and predicts the next one. The model
trains on the years before the test period (the last ``--test-years``), keeps the most recent 20 %
of its training windows for validation, and is compared on the test period with the naive
forecast "next year equals this year".

    pip install statsmodels               # or: pip install fusedrnn[examples]
    python examples/forecast.py           # a few seconds on 2 cores
"""

import argparse
import time

import numpy as np

from fusedrnn.keras import Input, Sequential
from fusedrnn.keras.callbacks import EarlyStopping
from fusedrnn.keras.layers import GRU, Dense
from fusedrnn.keras.utils import set_random_seed


def load_sunspots():
    try:
        from statsmodels.datasets import sunspots
    except ImportError:
        raise SystemExit("this example reads statsmodels' sunspot data: pip install statsmodels") from None
    data = sunspots.load_pandas().data
    return data["YEAR"].to_numpy().astype(int), data["SUNACTIVITY"].to_numpy().astype("float64")


def windows(series, window):
    """Inputs (n, window, 1) of consecutive values and the value after each as its target (n, 1)."""
    x = np.stack([series[i:i + window] for i in range(len(series) - window)])
    return x[:, :, None].astype("float32"), series[window:, None].astype("float32")


def save_plot(path, years, actual, forecast, naive):
    try:
        import matplotlib
        matplotlib.use("Agg")   # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install fusedrnn[examples])")
        return
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(years, actual, "k.-", label="observed")
    ax.plot(years, forecast, color="C3", label="GRU forecast")
    ax.plot(years, naive, color="0.6", ls="--", label="naive (last year's value)")
    ax.set_xlabel("year")
    ax.set_ylabel("sunspot number")
    ax.set_title("One-year-ahead sunspot forecasts on the test period (fusedrnn.keras)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot saved to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--window", type=int, default=24)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--test-years", type=int, default=60)
    parser.add_argument("--plot", default="forecast.png", help="PNG path ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    set_random_seed(args.seed)
    years, activity = load_sunspots()
    # Scale with the training years' statistics only, so nothing leaks from the test period.
    train_end = len(activity) - args.test_years
    mean, std = activity[:train_end].mean(), activity[:train_end].std()
    x, y = windows((activity - mean) / std, args.window)
    target_years = years[args.window:]
    split = train_end - args.window   # windows whose target lies before the test period
    x_train, y_train, x_test = x[:split], y[:split], x[split:]
    print(f"{len(x_train)} training windows, test years {target_years[split]}-{target_years[-1]}")

    model = Sequential([
        Input(shape=(args.window, 1)),
        GRU(args.units),
        Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.summary()
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=16, validation_split=0.2, verbose=0,
                        callbacks=[EarlyStopping(monitor="val_loss", patience=20, restore_best_weights=True)])
    seconds = time.perf_counter() - start

    forecast = model.predict(x_test, verbose=0)[:, 0] * std + mean
    actual = activity[train_end:]
    naive = activity[train_end - 1:-1]
    model_mae = np.abs(forecast - actual).mean()
    naive_mae = np.abs(naive - actual).mean()
    print(f"\ntraining took {seconds:.1f} s ({len(history.epoch)} epochs, best validation loss "
          f"{min(history.history['val_loss']):.3f})")
    change = 100 * (model_mae / naive_mae - 1)
    print(f"test MAE: GRU {model_mae:.1f}, naive last value {naive_mae:.1f} (in sunspot numbers; the GRU's "
          f"error is {abs(change):.0f} % {'lower' if change < 0 else 'higher'})")
    if args.plot:
        save_plot(args.plot, years[train_end:], actual, forecast, naive)


if __name__ == "__main__":
    main()
