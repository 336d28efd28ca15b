"""The classic Keras text classifier (padded sequences -> Embedding(mask_zero) -> LSTM -> Dense)
in real Keras 3, on fusedrnn's kernels.

The reviews are synthetic, so that it runs offline: sentences of a small vocabulary in which a few
words lean positive or negative and "not" flips the next word; each review's label is the sign of
its sum. Reviews have 5 to 80 words and are zero-padded at the front (Keras's default), so the
LSTM sees masks of many lengths; negation makes word order matter, which a bag of words misses.

This is a plain Keras program; the one fusedrnn line is ``fusedrnn.keras3.enable()`` (``--stock``
leaves it out, to compare). It runs on Keras's torch backend, or on JAX with KERAS_BACKEND=jax:

    python examples/keras3_text_classification.py
    KERAS_BACKEND=jax python examples/keras3_text_classification.py --epochs 5
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")   # Keras reads it once, at import

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fusedrnn.keras3  # noqa: E402

POSITIVE = ["good", "great", "fun", "moving", "clever", "beautiful"]
NEGATIVE = ["bad", "dull", "boring", "silly", "awful", "slow"]
NEUTRAL = ["the", "film", "plot", "actor", "was", "and", "a", "story", "music", "very", "it", "scene"]
WORDS = POSITIVE + NEGATIVE + NEUTRAL + ["not"]


def make_reviews(count, max_words, rng):
    """Word lists and their labels (1: the leaning words, "not" flipping the next one, sum > 0)."""
    reviews, labels = [], []
    while len(reviews) < count:
        words = list(rng.choice(WORDS, size=rng.integers(5, max_words + 1)))
        score, sign = 0, 1
        for word in words:
            score += sign * ((word in POSITIVE) - (word in NEGATIVE))
            sign = -1 if word == "not" else 1
        if score != 0:
            reviews.append(words)
            labels.append(int(score > 0))
    return reviews, np.array(labels, dtype="float32")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train", type=int, default=4000, help="training reviews")
    parser.add_argument("--test", type=int, default=1000, help="test reviews")
    parser.add_argument("--max-words", type=int, default=80)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--stock", action="store_true", help="Keras's own LSTM loop (no enable())")
    args = parser.parse_args()

    if not args.stock:
        fusedrnn.keras3.enable()   # the one added line
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    index = {word: i + 1 for i, word in enumerate(WORDS)}   # 0 is padding
    texts, y_train = make_reviews(args.train, args.max_words, rng)
    test_texts, y_test = make_reviews(args.test, args.max_words, rng)
    encode = lambda reviews: keras.utils.pad_sequences([[index[w] for w in r] for r in reviews],  # noqa: E731
                                                       maxlen=args.max_words)
    x_train, x_test = encode(texts), encode(test_texts)

    model = keras.Sequential([
        keras.Input((args.max_words,), dtype="int32"),
        keras.layers.Embedding(len(WORDS) + 1, 16, mask_zero=True),
        keras.layers.LSTM(args.units),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, validation_split=0.1, verbose=2)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"{keras.backend.backend()} backend, {'Keras loop' if args.stock else 'fusedrnn kernels'}: "
          f"fit {seconds:.1f} s")
    print(f"test accuracy {accuracy:.3f} (majority class {max(y_test.mean(), 1 - y_test.mean()):.3f})")


if __name__ == "__main__":
    main()
