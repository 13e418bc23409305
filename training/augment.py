"""Small random affine distortions (rotation, scale, shear, shift) applied per image on the fly.

One projective-transform op per batch keeps augmentation cheap on a 2-core CPU; the ranges
cover what the service's normaliser leaves behind on real uploads (slight tilt, size, offset).
"""

from __future__ import annotations

import math

import tensorflow as tf

MAX_ROTATION_DEG = 10.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHEAR = 0.15
MAX_SHIFT_PX = 2.0


def random_affine(images: tf.Tensor) -> tf.Tensor:
    """Distort a (batch, 28, 28, 1) float batch; each image gets its own transform."""
    batch = tf.shape(images)[0]
    side = tf.cast(tf.shape(images)[1], tf.float32)
    angle = tf.random.uniform([batch], -1.0, 1.0) * (MAX_ROTATION_DEG * math.pi / 180)
    scale = tf.random.uniform([batch], *SCALE_RANGE)
    shear = tf.random.uniform([batch], -MAX_SHEAR, MAX_SHEAR)
    shift = tf.random.uniform([batch, 2], -MAX_SHIFT_PX, MAX_SHIFT_PX)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # Output->input mapping about the image centre: x_in = A @ (x_out - c) + c - shift.
    a0, a1 = cos, -sin + shear * cos
    b0, b1 = sin, cos + shear * sin
    centre = (side - 1.0) / 2.0
    a2 = centre - a0 * centre - a1 * centre - shift[:, 0]
    b2 = centre - b0 * centre - b1 * centre - shift[:, 1]
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
