"""Make int8 TFLite models (and their tf2onnx .onnx) of published Keras architectures, random init, for the
importer's table in docs and notes. Needs TensorFlow, so it runs in a separate environment, not tinyflow's:

    python3.11 -m venv /work/tfenv && /work/tfenv/bin/pip install tensorflow-cpu==2.21.* tf2onnx tflite-micro
    OMP_NUM_THREADS=1 /work/tfenv/bin/python tests/data/models/make_keras_models.py OUT_DIR

Weights are random (`weights=None`, seed 0; BatchNorm statistics from a random batch) and quantized with 16 random
representative samples: the files are
right in structure, quantization and size, not in accuracy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf


def resnet8(shape=(32, 32, 3), classes=10) -> tf.keras.Model:
    """MLPerf Tiny's image-classification ResNet-8 (three residual stacks of 16 / 32 / 64 filters)."""
    x = inp = tf.keras.Input(shape)
    x = tf.keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(x))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = tf.keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(y))
        y = tf.keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = tf.keras.layers.BatchNormalization()(y)
        if stride != 1:
            x = tf.keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
        x = tf.keras.layers.ReLU()(tf.keras.layers.Add()([x, y]))
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(classes, activation="softmax")(x), name="resnet8")


def ds_cnn(shape=(49, 10, 1), classes=12, filters=64, blocks=4) -> tf.keras.Model:
    """DS-CNN (Zhang et al. 2017, MLPerf Tiny keyword spotting) with `blocks` depthwise-separable layers."""
    x = inp = tf.keras.Input(shape)
    x = tf.keras.layers.Conv2D(filters, (10, 4), strides=2, padding="same")(x)
    x = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(x))
    for _ in range(blocks):
        x = tf.keras.layers.DepthwiseConv2D(3, padding="same")(x)
        x = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(x))
        x = tf.keras.layers.Conv2D(filters, 1)(x)
        x = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(x))
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(classes, activation="softmax")(x), name="ds_cnn_l")


def pads(shape=(32, 32, 3), classes=4) -> tf.keras.Model:
    """Explicit pads the converter cannot fold into SAME padding: TF Lite PAD ops that convolutions read."""
    x = inp = tf.keras.Input(shape)
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = tf.keras.layers.ZeroPadding2D(2)(x)
    x = tf.keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = tf.keras.layers.ZeroPadding2D(((0, 3), (0, 3)))(x)
    x = tf.keras.layers.DepthwiseConv2D(3, strides=2, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(classes)(x), name="pads")


def sigmoid_se(shape=(16, 16, 3)) -> tf.keras.Model:
    """A conv with a squeeze-excite (pool, 1×1 conv, sigmoid, multiply) and a sigmoid head: TFLite LOGISTIC ops."""
    x = inp = tf.keras.Input(shape)
    x = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    pooled = tf.keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    x = tf.keras.layers.Multiply()([x, tf.keras.layers.Conv2D(8, 1, activation="sigmoid")(pooled)])
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, tf.keras.layers.Dense(1, activation="sigmoid")(x), name="sigmoid_se")


MODELS = {
    "mobilenet_v1_025_96": lambda: tf.keras.applications.MobileNet(
        (96, 96, 3), alpha=0.25, weights=None, classes=2, dropout=0.0
    ),
    "mobilenet_v2_035_96": lambda: tf.keras.applications.MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=2),
    "resnet8_32": resnet8,
    "ds_cnn_l": lambda: ds_cnn(filters=96, blocks=5),
    "pads": pads,
    "sigmoid_se": sigmoid_se,
}


def calibrate_batchnorm(model: tf.keras.Model, rng: np.random.Generator) -> None:
    """Set every BatchNorm's moving statistics to those of a random batch (momentum 0, one training-mode call):
    with random init the activations otherwise shrink or grow tenfold per layer, and TF Lite Micro's int8 softmax
    aborts on an input scale far from 1 (QuantizeMultiplierGreaterThanOne)."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(rng.standard_normal((16, *model.input_shape[1:])).astype(np.float32), training=True)


def convert(model: tf.keras.Model, path: Path) -> Path:
    rng = np.random.default_rng(0)
    calibrate_batchnorm(model, rng)
    shape = (1, *model.input_shape[1:])

    def representative():
        for _ in range(16):
            yield [rng.standard_normal(shape).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path.write_bytes(conv.convert())
    return path


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    for name, build in MODELS.items():
        path = convert(build(), out / f"{name}.tflite")
        onnx = path.with_suffix(".onnx")
        subprocess.run(
            [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(path), "--output", str(onnx), "--opset", "13"],
            check=True,
            capture_output=True,
        )
        print(name, path.stat().st_size, onnx.stat().st_size, flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "keras_models")
