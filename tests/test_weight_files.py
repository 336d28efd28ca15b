"""Weight files: written atomically, round-trip bit for bit, and bad files give clear errors."""

import numpy as np
import pytest

from fusedrnn import keras
from fusedrnn.keras import layers


def small_model(seed):
    model = keras.Sequential([layers.Input((5, 3)), layers.LSTM(4, return_sequences=True, seed=seed),
                              layers.GRU(3, seed=seed + 1), layers.Dense(2)])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("suffix", [".npz", ".weights.h5"])
def test_round_trip_is_bit_exact(tmp_path, suffix):
    if suffix.endswith(".h5"):
        pytest.importorskip("h5py")
    path = tmp_path / f"model{suffix}"
    source, target = small_model(0), small_model(1)
    source.save_weights(str(path))
    target.load_weights(str(path))
    for a, b in zip(source.get_weights(), target.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]   # no temporary left behind


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = small_model(0)
    old.save_weights(str(path))
    before = path.read_bytes()

    def fail_midway(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        small_model(1).save_weights(str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_files_raise_value_error_and_leave_the_model(tmp_path, damage):
    path = tmp_path / "model.npz"
    model = small_model(0)
    model.save_weights(str(path))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not weights at all" * 10,
                      "empty": b""}[damage])
    before = model.get_weights()
    with pytest.raises(ValueError):
        model.load_weights(str(path))
    for a, b in zip(before, model.get_weights()):
        assert np.array_equal(a, b)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    with open(path, "wb") as file:
        np.savez(file, **{"0000.x.0": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError):
        small_model(0).load_weights(str(path))


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        small_model(0).load_weights(str(tmp_path / "absent.npz"))


@pytest.mark.parametrize("other", ["mis-shaped", "missing", "unexpected"])
def test_weights_of_another_model_raise_and_leave_the_model(tmp_path, other):
    path = tmp_path / "other.npz"
    shapes = {"mis-shaped": [layers.LSTM(6, return_sequences=True), layers.GRU(3), layers.Dense(2)],
              "missing": [layers.LSTM(4, return_sequences=True), layers.GRU(3)],
              "unexpected": [layers.LSTM(4, return_sequences=True), layers.GRU(3), layers.Dense(2),
                             layers.Dense(2)]}[other]
    keras.Sequential([layers.Input((5, 3)), *shapes]).save_weights(str(path))
    model = small_model(0)
    before = model.get_weights()
    with pytest.raises(ValueError):
        model.load_weights(str(path))
    for a, b in zip(before, model.get_weights()):
        assert np.array_equal(a, b)
