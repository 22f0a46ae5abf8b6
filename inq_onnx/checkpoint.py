"""INQ checkpoints: the retraining state after each INQ step, written atomically, and read back for `--resume`.

A checkpoint is one `.npz` file (`checkpoint.npz` in its folder) replaced by a rename after every step, so a
kill at any moment leaves either the previous checkpoint or the new one, never a torn file. It records what it
belongs to (the model's SHA-256, the data's fingerprint and the configuration); resuming with anything else is
refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from .errors import ConfigError
from .model_io import atomic_write

__all__ = ["InqState", "CheckpointStore", "CHECKPOINT_FILE", "FORMAT_VERSION", "checkpoint_identity",
           "check_identity", "default_checkpoint_dir"]

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT_VERSION = 1


@dataclass
class InqState:
    """Everything the INQ loop needs to continue after step `steps_done` exactly as if it had not stopped."""

    steps_done: int  # INQ steps completed (frozen, retrained)
    params: dict[str, np.ndarray]  # every trainable parameter
    frozen: dict[str, np.ndarray]  # the boolean frozen mask of each quantized weight
    rng_state: dict[str, Any]  # numpy bit generator state of the loop's random generator
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)  # the optimizer's state_dict()
    reports: list[dict[str, Any]] = field(default_factory=list)  # StepReport fields of the steps done


def default_checkpoint_dir(output: str | os.PathLike) -> Path:
    """model.inq.onnx -> model.inq.onnx.ckpt beside it."""
    output = Path(output)
    return output.with_name(output.name + ".ckpt")


def _digest(chunks) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def checkpoint_identity(model: onnx.ModelProto, data_sha256: str, config: Mapping) -> dict[str, Any]:
    """What a checkpoint belongs to: the (normalized) model's hash, the data's fingerprint (DataSource.fingerprint:
    a hash of the arrays and labels, or of an image folder's file names, sizes and times), and the configuration
    that shapes the result."""
    return {"model_sha256": _digest([model.SerializeToString(deterministic=True)]),
            "data_sha256": data_sha256,
            "config": _flat(json.loads(json.dumps(dict(config), sort_keys=True, default=list)))}


def _flat(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options as dotted keys, so that a refusal names the one option that differs."""
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_identity(directory: Path, stored: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
    """ConfigError naming what differs when the state in `directory` (`stored`) belongs to another run."""
    if stored.get("model_sha256") != identity["model_sha256"]:
        raise ConfigError(f"--resume: the checkpoint in {directory} belongs to another model")
    if stored.get("data_sha256") != identity["data_sha256"]:
        raise ConfigError(f"--resume: the checkpoint in {directory} was made with other data")
    theirs, ours = stored.get("config", {}), identity["config"]
    changed = sorted(key for key in set(theirs) | set(ours) if theirs.get(key) != ours.get(key))
    if changed:
        details = ", ".join(f"{key} {theirs.get(key)!r} -> {ours.get(key)!r}" for key in changed)
        raise ConfigError(f"--resume: the checkpoint in {directory} was made with other options ({details})")


class CheckpointStore:
    """Reads and writes the checkpoint of one retraining run in `directory`."""

    def __init__(self, directory: str | os.PathLike, identity: Mapping[str, Any]):
        self.directory = Path(directory)
        self.identity = dict(identity)

    @property
    def path(self) -> Path:
        return self.directory / CHECKPOINT_FILE

    def save(self, state: InqState) -> None:
        """Replace the checkpoint with `state` atomically (the folder is created when missing)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the checkpoint folder {self.directory}: {exc.strerror or exc}") from None
        names = sorted(state.params)
        masked = sorted(state.frozen)
        slots = sorted(state.optimizer)
        meta = {"format": FORMAT_VERSION, "identity": self.identity, "steps_done": state.steps_done,
                "params": names, "frozen": masked, "optimizer": slots, "rng_state": state.rng_state,
                "reports": state.reports}
        arrays = {"meta": np.array(json.dumps(meta))}
        # Keys by position: tensor names may hold characters a zip entry name should not.
        arrays.update((f"param_{i}", state.params[name]) for i, name in enumerate(names))
        arrays.update((f"frozen_{i}", state.frozen[name]) for i, name in enumerate(masked))
        arrays.update((f"optimizer_{i}", np.asarray(state.optimizer[name])) for i, name in enumerate(slots))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(self.path, buffer.getvalue())

    def load(self) -> InqState:
        """The stored state; ConfigError when there is none, it is unreadable, or it belongs to another run."""
        if not self.directory.is_dir():
            raise ConfigError(f"--resume: {self.directory} is not a folder")
        if not self.path.is_file():
            raise ConfigError(f"--resume: no checkpoint in {self.directory} (expected {CHECKPOINT_FILE})")
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"--resume: {self.path} is not a readable checkpoint ({exc})") from None
        if meta.get("format") != FORMAT_VERSION:
            raise ConfigError(f"--resume: {self.path} has checkpoint format {meta.get('format')!r}, this version "
                              f"reads {FORMAT_VERSION}")
        check_identity(self.directory, meta["identity"], self.identity)
        return InqState(
            steps_done=int(meta["steps_done"]),
            params={name: arrays[f"param_{i}"] for i, name in enumerate(meta["params"])},
            frozen={name: arrays[f"frozen_{i}"] for i, name in enumerate(meta["frozen"])},
            rng_state=meta["rng_state"],
            optimizer={name: arrays[f"optimizer_{i}"] for i, name in enumerate(meta["optimizer"])},
            reports=meta["reports"])

    def remove(self) -> None:
        """Delete the checkpoint (and a temporary file a kill mid-write left) and the folder if nothing else is in it."""
        for path in [self.path, *self.directory.glob(f".{CHECKPOINT_FILE}.*.tmp")]:
            path.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass
