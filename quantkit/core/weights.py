"""What a model's weights are without loading them: their nominal bit width (which gates apply)
and a cheap identity for cache keys."""

import re
from pathlib import Path

GGUF_TYPE = re.compile(r"(?:^|[^A-Za-z0-9])(I?Q(\d)_[A-Z0-9_]*|BF16|F16|F32)(?:[^A-Za-z0-9]|$)", re.IGNORECASE)


def bits_from_name(name: str) -> int | None:
    """Bits of a GGUF type named in a file name or setting: Q4_K_M -> 4, Q8_0 -> 8, F16 -> 16."""
    match = GGUF_TYPE.search(name)
    if not match:
        return None
    kind = match.group(1).upper()
    return 16 if kind in ("F16", "BF16") else 32 if kind == "F32" else int(match.group(2))


def artifact_bits(manifest: dict | None, file_name: str = "", bits_per_weight: float | None = None) -> int:
    """The nominal weight width of an artifact, for choosing its gates."""
    manifest = manifest or {}
    settings = manifest.get("settings", {})
    if isinstance(settings.get("bits"), int):
        return settings["bits"]
    for value in (file_name, str(settings.get("gguf_type", "")), " ".join(map(str, settings.get("gguf_types", []) or []))):
        if value and (bits := bits_from_name(value)):
            return min(bits, 16)
    if bits_per_weight:
        for bits in (16, 8, 6, 5, 4, 3):
            if bits_per_weight >= bits * 0.9:  # whole-file bpw is a little above the nominal width
                return bits
        return 2
    return 16  # a plain checkpoint


def weights_identity(path: Path) -> list:
    """Cheap identity of a model's weights for the cache key: names, sizes, mtimes."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return [
        [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for p in files
        if p.suffix in (".safetensors", ".gguf", ".bin", ".json", ".jinja")
    ]
