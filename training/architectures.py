"""Model architectures, selectable by name. ``seed`` is the reference design, kept to reproduce it."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

INPUT_SHAPE = (28, 28, 1)


def seed(n_classes: int) -> keras.Model:
    """The reference CNN: 1,747,951 parameters for 47 classes."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.2),
            layers.Conv2D(128, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.2),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(128, activation="relu"),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="seed",
    )


def _conv_bn(x: keras.KerasTensor, filters: int, kernel: int = 3) -> keras.KerasTensor:
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def bn_cnn(n_classes: int) -> keras.Model:
    """Batch-normalised CNN sized for CPU training: one conv at 28x28, two at 14x14, two at 7x7.

    Most of the compute sits at 14x14 and 7x7, where the strokes are already resolved; the
    cost per image is about twice the reference's, for about a third of its parameters.
    """
    inputs = keras.Input(INPUT_SHAPE)
    x = _conv_bn(inputs, 32, 5)
    x = layers.MaxPooling2D(2)(x)
    x = _conv_bn(x, 64)
    x = _conv_bn(x, 64)
    x = layers.MaxPooling2D(2)(x)
    x = _conv_bn(x, 128)
    x = _conv_bn(x, 128)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(256, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="bn_cnn")


ARCHITECTURES: dict[str, Callable[[int], keras.Model]] = {"seed": seed, "bn_cnn": bn_cnn}
DEFAULT_ARCHITECTURE = "bn_cnn"


def build(name: str, n_classes: int) -> keras.Model:
    try:
        return ARCHITECTURES[name](n_classes)
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}") from None
