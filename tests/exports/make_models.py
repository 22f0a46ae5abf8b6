"""Build the real-export corpus: small digits classifiers trained in PyTorch, TensorFlow/Keras, PaddlePaddle and
scikit-learn and exported by each framework's own ONNX converter, one model per opset from 9 to 17.

Usage: python make_models.py OUT_DIR  (in the venv of tests/exports/requirements.txt). Writes OUT_DIR/<name>.onnx,
OUT_DIR/digits.npz (train_x, train_labels, val_x, val_labels; images flattened to 64 values in [0, 1]) and
OUT_DIR/manifest.json, which lists every model with its framework, exporter and versions, opset, input name and
per-sample shape, and the validation accuracy the framework itself measured before export.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

INPUT = "image"
SEED = 0


def digits_split(validation_fraction: float = 0.25) -> dict[str, np.ndarray]:
    """scikit-learn's digits in [0, 1], split as the inq-onnx demo splits them (seed 0, a quarter for validation)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    cut = int(len(y) * (1 - validation_fraction))
    train, val = order[:cut], order[cut:]
    return {"train_x": x[train], "train_labels": y[train], "val_x": x[val], "val_labels": y[val]}


def _shaped(x: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
    return x.reshape((len(x),) + sample_shape)


# --- PyTorch (TorchScript-based exporter, the one that writes opsets below 18) ---

def _torch_module(kind: str, weight_norm: bool = False):
    import torch
    from torch import nn

    class Cnn(nn.Module):
        """Conv-BN-ReLU-MaxPool-Conv-BN-ReLU, flattened with view() (Shape/Gather/Concat/Reshape), then two Linear."""

        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.fc1, self.fc2 = nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 10)
            if weight_norm:  # conv2's weight is then computed in the graph: g * v / ||v||
                nn.utils.parametrizations.weight_norm(self.conv2)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
            x = torch.relu(self.bn2(self.conv2(x)))
            return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))

    class Tokens(nn.Module):
        """The image's 8 rows as tokens: a Linear on (N, 8, 8) (a 3-D MatMul), HardSwish, LayerNorm, a Linear head."""

        def __init__(self):
            super().__init__()
            self.embed, self.act, self.norm = nn.Linear(8, 32), nn.Hardswish(), nn.LayerNorm(32)
            self.head = nn.Linear(8 * 32, 10)

        def forward(self, x):
            return self.head(torch.flatten(self.norm(self.act(self.embed(x))), 1))

    return {"cnn": Cnn, "tokens": Tokens}[kind]()


def export_torch(kind: str, fold_constants: bool, old_style: bool = False):
    """old_style: weight norm on conv2 and initializers listed as graph inputs too, without constant folding,
    so the graph computes a weight from a constant subgraph as opset-9 era exports do."""
    def build(data, sample_shape, opset, path):
        import torch

        torch.manual_seed(SEED)
        torch.set_num_threads(1)  # a tiny model: threads cost more than they bring
        model = _torch_module(kind, weight_norm=old_style)
        x = torch.from_numpy(_shaped(data["train_x"], sample_shape))
        y = torch.from_numpy(data["train_labels"])
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        order = np.random.default_rng(SEED)
        for _ in range(15):
            model.train()
            for batch in np.array_split(order.permutation(len(y)), len(y) // 32):
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            val = model(torch.from_numpy(_shaped(data["val_x"], sample_shape))).numpy()
        torch.onnx.export(model, (x[:2],), str(path), opset_version=opset, dynamo=False,
                          do_constant_folding=fold_constants, keep_initializers_as_inputs=old_style,
                          input_names=[INPUT], output_names=["logits"],
                          dynamic_axes={INPUT: {0: "batch"}, "logits": {0: "batch"}})
        return val, {"framework": "pytorch", "framework_version": torch.__version__,
                     "exporter": "torch.onnx (TorchScript)", "exporter_version": torch.__version__,
                     "exporter_options": f"do_constant_folding={fold_constants}"
                     + (", keep_initializers_as_inputs=True, weight_norm(conv2)" if old_style else "")}
    return build


# --- TensorFlow / Keras 3 through tf2onnx ---

def _keras_model(kind: str):
    import keras
    from keras import layers

    if kind == "cnn":
        stack = [keras.Input((8, 8, 1)), layers.Conv2D(8, 3, padding="same"), layers.BatchNormalization(),
                 layers.ReLU(), layers.MaxPooling2D(2), layers.Conv2D(16, 3, padding="same"),
                 layers.BatchNormalization(), layers.ReLU(), layers.Flatten(), layers.Dense(32, activation="relu"),
                 layers.Dense(10)]
    elif kind == "separable":  # a MobileNet-style block: depthwise (a grouped Conv in ONNX) then pointwise
        stack = [keras.Input((8, 8, 1)), layers.Conv2D(16, 3, padding="same", activation="relu"),
                 layers.DepthwiseConv2D(3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
                 layers.Conv2D(32, 1, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(10)]
    else:
        stack = [keras.Input((64,)), layers.Dense(64, activation="relu"), layers.Dropout(0.1), layers.Dense(10)]
    return keras.Sequential(stack)


def export_keras(kind: str):
    def build(data, sample_shape, opset, path):
        import keras
        import tensorflow as tf
        import tf2onnx

        keras.utils.set_random_seed(SEED)
        model = _keras_model(kind)
        model.compile(optimizer=keras.optimizers.Adam(3e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(_shaped(data["train_x"], sample_shape), data["train_labels"], epochs=15, batch_size=32, verbose=0)
        val = model.predict(_shaped(data["val_x"], sample_shape), verbose=0)
        # from_keras does not take Keras 3 models; a tf.function of the inference call is what tf2onnx reads.
        function = tf.function(lambda x: model(x, training=False))
        spec = (tf.TensorSpec((None,) + sample_shape, tf.float32, name=INPUT),)
        tf2onnx.convert.from_function(function, input_signature=spec, opset=opset, output_path=str(path))
        return val, {"framework": "tensorflow", "framework_version": f"{tf.__version__} (keras {keras.__version__})",
                     "exporter": "tf2onnx", "exporter_version": tf2onnx.__version__, "exporter_options": ""}
    return build


# --- PaddlePaddle through paddle2onnx ---

def _paddle_module(kind: str):
    import paddle
    from paddle import nn

    class Cnn(nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2D(1, 8, 3, padding=1), nn.BatchNorm2D(8)
            self.conv2, self.bn2 = nn.Conv2D(8, 16, 3, padding=1), nn.BatchNorm2D(16)
            self.fc1, self.fc2 = nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 10)

        def forward(self, x):
            x = nn.functional.max_pool2d(nn.functional.relu(self.bn1(self.conv1(x))), 2)
            x = nn.functional.relu(self.bn2(self.conv2(x)))
            return self.fc2(nn.functional.relu(self.fc1(paddle.flatten(x, 1))))

    class Mlp(nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 10)

        def forward(self, x):
            return self.fc2(nn.functional.relu(self.fc1(x)))

    return {"cnn": Cnn, "mlp": Mlp}[kind]()


def export_paddle(kind: str):
    def build(data, sample_shape, opset, path):
        import paddle
        import paddle2onnx

        paddle.seed(SEED)
        model = _paddle_module(kind)
        x = paddle.to_tensor(_shaped(data["train_x"], sample_shape))
        y = paddle.to_tensor(data["train_labels"])
        optimizer = paddle.optimizer.Adam(learning_rate=3e-3, parameters=model.parameters())
        order = np.random.default_rng(SEED)
        for _ in range(15):
            model.train()
            for batch in np.array_split(order.permutation(len(data["train_labels"])), len(y) // 32):
                index = paddle.to_tensor(batch)
                loss = paddle.nn.functional.cross_entropy(model(x[index]), y[index])
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
        model.eval()
        val = model(paddle.to_tensor(_shaped(data["val_x"], sample_shape))).numpy()
        spec = [paddle.static.InputSpec([None, *sample_shape], "float32", INPUT)]
        paddle.onnx.export(model, str(path.with_suffix("")), input_spec=spec, opset_version=opset)
        return val, {"framework": "paddlepaddle", "framework_version": paddle.__version__,
                     "exporter": "paddle2onnx", "exporter_version": paddle2onnx.__version__, "exporter_options": ""}
    return build


# --- scikit-learn through skl2onnx ---

def export_sklearn(data, sample_shape, opset, path):
    import sklearn
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPClassifier

    classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=SEED)
    classifier.fit(data["train_x"], data["train_labels"])
    val = classifier.predict_proba(data["val_x"])
    # zipmap off: the probabilities as a (N, 10) tensor next to the int64 label, not a sequence of maps.
    onnx_model = skl2onnx.convert_sklearn(classifier, initial_types=[(INPUT, FloatTensorType([None, 64]))],
                                          target_opset={"": opset, "ai.onnx.ml": 1},
                                          options={id(classifier): {"zipmap": False}})
    path.write_bytes(onnx_model.SerializeToString())
    return val, {"framework": "scikit-learn", "framework_version": sklearn.__version__,
                 "exporter": "skl2onnx", "exporter_version": skl2onnx.__version__, "exporter_options": "zipmap=False"}


# name, opset, per-sample input shape, builder
MODELS = [
    ("torch_cnn_bn_weightnorm", 9, (1, 8, 8), export_torch("cnn", fold_constants=False, old_style=True)),
    ("tf_cnn", 10, (8, 8, 1), export_keras("cnn")),
    ("paddle_cnn", 11, (1, 8, 8), export_paddle("cnn")),
    ("sklearn_mlp", 12, (64,), export_sklearn),
    ("torch_cnn", 13, (1, 8, 8), export_torch("cnn", fold_constants=True)),
    ("tf_mlp", 14, (64,), export_keras("mlp")),
    ("paddle_mlp", 15, (64,), export_paddle("mlp")),
    ("tf_separable", 16, (8, 8, 1), export_keras("separable")),
    ("torch_tokens", 17, (8, 8), export_torch("tokens", fold_constants=True)),
]


def build_one(name: str, out_dir: Path, data: dict[str, np.ndarray]) -> dict:
    """Train and export one model; its manifest entry."""
    import onnx

    opset, sample_shape, build = next((o, s, b) for n, o, s, b in MODELS if n == name)
    path = out_dir / f"{name}.onnx"
    begin = time.perf_counter()
    val, about = build(data, sample_shape, opset, path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    written = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if written["ai.onnx"] != opset:
        raise SystemExit(f"{name}: asked for opset {opset}, the exporter wrote {written['ai.onnx']}")
    accuracy = float(np.mean(np.argmax(val, axis=1) == data["val_labels"]))
    return {"name": name, "file": path.name, **about, "opset": opset, "ir_version": model.ir_version,
            "input": INPUT, "sample_shape": list(sample_shape), "outputs": [o.name for o in model.graph.output],
            "nodes": len(model.graph.node), "float_accuracy": accuracy,
            "seconds": round(time.perf_counter() - begin, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # build this model in this process (see below)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.one:
        data = dict(np.load(args.out_dir / "digits.npz"))
        entry = build_one(args.one, args.out_dir, data)
        (args.out_dir / f"{args.one}.entry.json").write_text(json.dumps(entry))
        return 0
    np.savez(args.out_dir / "digits.npz", **digits_split())
    entries, started = [], time.perf_counter()
    log_path = args.out_dir / "export.log"
    for name, *_ in MODELS:
        # One process per model: torch, TensorFlow and Paddle loaded into one process crash it. Their chatter goes
        # to export.log, shown when a model fails.
        with open(log_path, "a") as log:
            done = subprocess.run([sys.executable, __file__, str(args.out_dir), "--one", name], stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode != 0:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            print(f"error: exporting {name} failed (exit {done.returncode}); its log is above", file=sys.stderr)
            return 1
        entry_file = args.out_dir / f"{name}.entry.json"
        entries.append(json.loads(entry_file.read_text()))
        entry_file.unlink()
        e = entries[-1]
        print(f"{name}: {e['framework']} via {e['exporter']} {e['exporter_version']}, opset {e['opset']}, "
              f"{e['nodes']} nodes, validation accuracy {e['float_accuracy']:.4f} ({e['seconds']} s)", flush=True)
    manifest = {"models": entries, "seconds": round(time.perf_counter() - started, 1),
                "onnx_version": version("onnx"), "python": sys.version.split()[0]}
    (args.out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
