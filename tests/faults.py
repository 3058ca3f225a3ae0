"""Faults injected into a finished artifact in place, for the fault matrix (test_fault_matrix.py):
the quantized weights, their scales and zero-points (safetensors of every transformers format,
and GGUF blocks patched through gguf's GGUFReader in "r+" mode), the tokenizer, the chat
template, and a truncated weight file. Each returns the names of what it changed (empty: the
format has nothing of that kind, which the matrix then asserts)."""

import json
from pathlib import Path

import numpy as np

# Safetensors names by role, across compressed-tensors (weight_packed/weight_scale/weight_zero_point),
# AutoAWQ (qweight/scales/qzeros) and bitsandbytes (weight + absmax/nested_absmax, or weight + SCB).
SCALES = (".weight_scale", ".scales", ".nested_absmax", ".SCB")
ZERO_POINTS = (".weight_zero_point", ".qzeros")
CODES = (".weight_packed", ".qweight")
LAYER = "model.layers.0."
# GGUF block layouts (ggml-common.h): bytes per block, offset of the fp16 scale d, of the fp16
# minimum dmin/m (None: the type is symmetric, it has no zero-point).
BLOCKS = {
    "Q4_0": (18, 0, None),
    "Q4_1": (20, 0, 2),
    "Q5_0": (22, 0, None),
    "Q5_1": (24, 0, 2),
    "Q8_0": (34, 0, None),
    "Q2_K": (84, 80, 82),
    "Q3_K": (110, 108, None),
    "Q4_K": (144, 0, 2),
    "Q5_K": (176, 0, 2),
    "Q6_K": (210, 208, None),
    "IQ4_NL": (18, 0, None),
    "IQ4_XS": (136, 0, None),
    "IQ3_S": (110, 0, None),
    "IQ3_XXS": (98, 0, None),
}
WRONG_TEMPLATE = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"  # Llama-2 style


def is_code(name: str, dtype) -> bool:
    """A quantized weight tensor: packed ints, or a linear's int8/uint8/float8 ``.weight``."""
    import torch

    return name.endswith(CODES) or (name.endswith(".weight") and dtype in (torch.int8, torch.uint8, torch.float8_e4m3fn))


def is_scale(name: str, dtype) -> bool:
    import torch

    # nf4 without double quantization keeps float absmax; with it, uint8 absmax under nested_absmax.
    return name.endswith(SCALES) or (name.endswith(".absmax") and dtype == torch.float32)


def edit_safetensors(folder: Path, pick, change) -> list[str]:
    """Apply ``change(tensor)`` to every tensor whose ``pick(name, dtype)`` holds; the names."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    changed = [name for name, t in tensors.items() if pick(name, t.dtype)]
    for name in changed:
        tensors[name] = change(tensors[name])
    save_file(tensors, path, metadata={"format": "pt"})
    return changed


def times(factor):
    """Multiply a float tensor by ``factor`` (a number, or per-element random when "noise")."""
    import torch

    def change(t):
        gen = torch.Generator().manual_seed(0)
        f = torch.exp(torch.randn(t.shape, generator=gen) * 1.5) if factor == "noise" else factor
        return (t.float() * f).to(t.dtype)

    return change


def random_ints(t):
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.randint(-(2**31), 2**31 - 1, t.shape, generator=gen, dtype=torch.int64).to(t.dtype)


def zeros(t):
    import torch

    return torch.zeros(t.shape, dtype=t.dtype)


def safetensors_fault(folder: Path, fault: str) -> list[str]:
    in_layer = lambda name: name.startswith(LAYER)  # noqa: E731
    if fault == "layer-zeroed":
        return edit_safetensors(folder, lambda n, d: in_layer(n) and (is_code(n, d) or is_scale(n, d)), zeros)
    if fault == "layer-scaled":
        return edit_safetensors(folder, lambda n, d: in_layer(n) and is_scale(n, d), times(8.0))
    if fault == "scales-perturbed":
        return edit_safetensors(folder, is_scale, times("noise"))
    if fault == "zero-points-perturbed":
        return edit_safetensors(folder, lambda n, d: n.endswith(ZERO_POINTS), random_ints)
    raise AssertionError(fault)


def gguf_fault(path: Path, fault: str) -> list[str]:
    """Patch ``path`` in place: layer 0 (``blk.0.``) zeroed or its scales d times 8, every
    quantized tensor's d (or dmin, the K-quants' zero-point) times a random factor per block."""
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    rng, changed = np.random.default_rng(0), []
    for tensor in reader.tensors:
        layout = BLOCKS.get(tensor.tensor_type.name)
        if layout is None:  # F32 norms, F16: not quantized weights
            continue
        size, d_at, min_at = layout
        blocks = tensor.data.reshape(-1, size)
        in_layer = tensor.name.startswith("blk.0.")
        if fault == "layer-zeroed" and in_layer:
            blocks[...] = 0
        elif fault in ("layer-scaled", "scales-perturbed", "zero-points-perturbed"):
            at = min_at if fault == "zero-points-perturbed" else d_at
            if at is None or (fault == "layer-scaled" and not in_layer):
                continue
            value = blocks[:, at : at + 2].copy().view(np.float16).astype(np.float32)
            factor = 8.0 if fault == "layer-scaled" else np.exp(rng.normal(size=value.shape) * 1.5)
            blocks[:, at : at + 2] = (value * factor).astype(np.float16).view(np.uint8)
        else:
            continue
        changed.append(tensor.name)
    reader.data.flush()
    del reader
    return changed


def gguf_string(reader, key: str, index: int = 0):
    """The writable bytes of string ``index`` of field ``key``."""
    field = reader.fields[key]
    return field.parts[field.data[index]]


def gguf_swap_tokens(path: Path, a: str = "Ġthe", b: str = "Ġand") -> list[str]:
    """Swap two vocabulary entries of the same length: another tokenizer, same size on disk."""
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    field = reader.fields["tokenizer.ggml.tokens"]
    ids = {
        bytes(field.parts[i]).decode(): n for n, i in enumerate(field.data) if bytes(field.parts[i]) in (a.encode(), b.encode())
    }
    assert len(ids) == 2 and len(a.encode()) == len(b.encode()), ids
    gguf_string(reader, "tokenizer.ggml.tokens", ids[a])[:] = np.frombuffer(b.encode(), np.uint8)
    gguf_string(reader, "tokenizer.ggml.tokens", ids[b])[:] = np.frombuffer(a.encode(), np.uint8)
    reader.data.flush()
    del reader
    return [f"tokenizer.ggml.tokens[{ids[a]}]", f"tokenizer.ggml.tokens[{ids[b]}]"]


def gguf_wrong_template(path: Path) -> list[str]:
    """Overwrite tokenizer.chat_template with a Llama-2 style one padded to the same length."""
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    text = gguf_string(reader, "tokenizer.chat_template")
    wrong = WRONG_TEMPLATE + "{#" + "-" * max(0, len(text) - len(WRONG_TEMPLATE) - 4) + "#}"
    assert len(wrong) == len(text), "the base's template is shorter than the wrong one"
    text[:] = np.frombuffer(wrong.encode(), np.uint8)
    reader.data.flush()
    del reader
    return ["tokenizer.chat_template"]


def swap_tokenizer(folder: Path, other: Path) -> list[str]:
    """Replace the artifact's tokenizer files by ``other``'s (its chat template stays)."""
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
        if (other / name).is_file():
            (folder / name).write_bytes((other / name).read_bytes())
    return sorted(p.name for p in other.iterdir() if p.name.startswith(("tokenizer", "special")))


def wrong_chat_template(folder: Path) -> list[str]:
    """Write another model's chat template wherever the artifact keeps one."""
    changed = []
    if (folder / "chat_template.jinja").is_file():
        (folder / "chat_template.jinja").write_text(WRONG_TEMPLATE)
        changed.append("chat_template.jinja")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if "chat_template" in config or not changed:
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": WRONG_TEMPLATE}))
        changed.append("tokenizer_config.json")
    return changed


def truncate(path: Path) -> list[str]:
    """Cut a weight file to 60 % of its length, as an interrupted copy or download leaves it."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * 0.6))
    return [path.name]
