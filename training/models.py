"""Recurrent network builders: SimpleRNN, LSTM and GRU with a direct multi-step head.

See docs/design.md, "Data path".
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from training.config import ARCHITECTURES, Architecture
from training.errors import ConfigError

# The Keras layer behind each of training.config.ARCHITECTURES (a test keeps the two in step).
RECURRENT_LAYERS: dict[Architecture, type[layers.Layer]] = {
    "simple_rnn": layers.SimpleRNN,
    "lstm": layers.LSTM,
    "gru": layers.GRU,
}


def build_model(
    architecture: str,
    window: int,
    feature_count: int,
    horizon: int = 1,
    units: int = 64,
    layer_count: int = 1,
    dropout: float = 0.0,
    learning_rate: float = 1e-3,
    seed: int = 42,
) -> keras.Model:
    """Build and compile a stacked recurrent network emitting all `horizon` steps at once.

    The head is one Dense layer with `horizon` outputs (direct multi-output
    forecasting), so a multi-step forecast is one forward pass rather than a
    recursion that feeds its own errors back in.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture must be one of {sorted(ARCHITECTURES)}, got '{architecture}'")
    if units < 1 or layer_count < 1:
        raise ConfigError("units and layers must be at least 1")
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    if learning_rate <= 0:
        raise ConfigError(f"learning_rate must be positive, got {learning_rate}")
    keras.utils.set_random_seed(seed)
    recurrent = RECURRENT_LAYERS[architecture]  # type: ignore[index]
    inputs = keras.Input(shape=(window, feature_count), name="window")
    hidden = inputs
    for index in range(layer_count):
        last = index == layer_count - 1
        hidden = recurrent(units, return_sequences=not last, dropout=dropout, name=f"{architecture}_{index + 1}")(
            hidden
        )
    outputs = layers.Dense(horizon, name="forecast")(hidden)
    model = keras.Model(inputs, outputs, name=f"stockcast_{architecture}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    return model


# Rows per call of the network at prediction time: bounds the memory of one call on a long series.
PREDICT_CHUNK = 4096


def predict_outputs(model: keras.Model, scaled: np.ndarray, chunk: int = PREDICT_CHUNK) -> np.ndarray:
    """The network's outputs for scaled windows (n, window, features), as (n, outputs) float32.

    Why not `model.predict`: it runs the network through a tf.function that
    it traces again for every new input shape (each array's last, partial
    batch), and a backtest fits a new network per fold and predicts arrays of
    several lengths, so TensorFlow filled the first start's output with
    "triggered tf.function retracing" warnings, each a graph built to be used
    once. Calling the network directly runs it eagerly: nothing is traced, so
    nothing is retraced, and for the few thousand windows training predicts
    it is as fast (the served path has its own compiled function,
    `app/inference/engine.py`).
    """
    if len(scaled) == 0:
        return np.empty((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
    scaled = np.asarray(scaled, dtype=np.float32)
    parts = [
        keras.ops.convert_to_numpy(model(scaled[start : start + chunk], training=False))
        for start in range(0, len(scaled), chunk)
    ]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
