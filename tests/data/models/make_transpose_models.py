"""Make the two int8 TFLite fixtures with TRANSPOSE operators (issue 22), random init, with TensorFlow in a side
environment (not tinyflow's):

    python3.11 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.*
    OMP_NUM_THREADS=1 /tmp/tfenv/bin/python tests/data/models/make_transpose_models.py tests/data/models

- `leading_transpose.tflite`: a MobileNetV2-style net converted with an NCHW input (3×32×32): its first operator
  is the TRANSPOSE to NHWC, which the importer folds into the input layout;
- `kws_transpose.tflite`: a TF-style keyword-spotting net (conv → NHWC→NCHW TRANSPOSE → flatten → fully
  connected → softmax): the mid-graph TRANSPOSE changes the order the classifier reads, so dropping it gives
  wrong outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_keras_models import convert


def leading_transpose(shape=(3, 32, 32), classes=4) -> tf.keras.Model:
    """NCHW input, Permute to NHWC, then an inverted-residual block's layers, pooled, classified."""
    x = inp = tf.keras.Input(shape)
    x = tf.keras.layers.Permute((2, 3, 1))(x)  # NCHW -> NHWC: TF Lite's TRANSPOSE [0, 2, 3, 1], operator 0
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = tf.keras.layers.ReLU(6.0)(tf.keras.layers.BatchNormalization()(x))
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = tf.keras.layers.ReLU(6.0)(tf.keras.layers.BatchNormalization()(x))
    x = tf.keras.layers.Conv2D(16, 1, use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(classes)(x), name="leading_transpose")


def kws_transpose(shape=(49, 10, 1), classes=12) -> tf.keras.Model:
    """Conv over the MFCC map, then NHWC -> NCHW before the flatten (as a PyTorch-minded TF model does)."""
    x = inp = tf.keras.Input(shape)
    x = tf.keras.layers.Conv2D(8, (10, 4), strides=2, padding="same")(x)
    x = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(x))
    x = tf.keras.layers.Permute((3, 1, 2))(x)  # NHWC -> NCHW: a mid-graph TRANSPOSE [0, 3, 1, 2]
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(classes, activation="softmax")(x), name="kws_transpose")


MODELS = {"leading_transpose": leading_transpose, "kws_transpose": kws_transpose}


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    for name, build in MODELS.items():
        path = convert(build(), out / f"{name}.tflite")
        print(name, path.stat().st_size, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
