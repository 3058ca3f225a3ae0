"""The compressed-tensors AWQ result of one calibration, kept in quantkit's cache so every format
(compressed-tensors, autoawq) and every later call with the same inputs reuses it in seconds.

Key: the model's weights (each weight file's resolved path, size and mtime - hashing a 70B
checkpoint would cost minutes - plus config.json's bytes), every setting that changes the result,
the calibration samples' sha256 and the library versions. Only the newest ``KEEP`` entries stay:
an entry is as big as the artifact.
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from quantkit.core.atomic import atomic_dir, read_json
from quantkit.core.paths import cache_dir

KEEP = 2
RECORD = "quantkit-awq.json"  # inside an entry: the settings and calibration it was made with
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
VERSIONED = ("torch", "transformers", "llmcompressor", "compressed-tensors")


def model_identity(model_dir: Path) -> dict:
    files = {}
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            stat = path.stat()  # follows hub snapshot links to their content-named blobs
            files[path.name] = [os.path.realpath(path), stat.st_size, stat.st_mtime_ns]
    config = Path(model_dir) / "config.json"
    return {"files": files, "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest()}


def cache_key(model_dir: Path, settings: dict, calib_sha256: str) -> str:
    from quantkit.core.manifest import library_versions

    blob = {
        "model": model_identity(model_dir),
        "settings": settings,
        "calibration": calib_sha256,
        "versions": library_versions(*VERSIONED),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


def root() -> Path:
    return cache_dir("awq")


def lookup(key: str) -> tuple[Path, dict] | None:
    """The cached folder and its record, or None; a hit counts as a use (for eviction)."""
    folder = root() / key
    record = folder / RECORD
    data = read_json(record, default=None)
    if data is None:
        return None
    os.utime(folder)
    return folder, data


def store(key: str, build, record: dict) -> tuple[Path, dict]:
    """Run ``build(folder)`` into a staging folder and keep it under ``key`` once complete."""
    folder = root() / key
    with atomic_dir(folder, overwrite=True) as staging:
        started = time.time()
        build(staging)
        record = {**record, "key": key, "calibration_wall_s": round(time.time() - started, 1)}
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    evict(keep=KEEP)
    return folder, record


def evict(keep: int) -> None:
    entries = sorted(
        (p for p in root().iterdir() if p.is_dir() and (p / RECORD).is_file()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
