"""``--format autoawq``: the classic AutoAWQ GEMM layout, repacked from the compressed-tensors AWQ
result of the same calibration - the same integer weights, scales and zero points, in seconds.

AutoAWQ's ``WQLinear_GEMM`` (what transformers + gptqmodel, vLLM ``--quantization awq``, lmdeploy
and TGI load), for a Linear of ``in`` inputs, ``out`` outputs and groups of ``g`` inputs:
``qweight`` [in, out/8] and ``qzeros`` [in/g, out/8] int32 of unsigned 4-bit values, nibble i of
each int32 holding column ``AWQ_ORDER[i]`` of its 8; ``scales`` [in/g, out] float16;
``w[i, o] = (q[i, o] - z[i // g, o]) * s[i // g, o]``.
compressed-tensors ``pack-quantized`` holds the transposed values: ``weight_packed`` [out, in/8]
(signed, offset by 8), ``weight_scale`` [out, in/g], ``weight_zero_point`` packed along dim 0.
It is read with compressed-tensors' own unpacking; the AutoAWQ packing is written here because
AutoAWQ is archived (tests check it against an independent unpacker and a real load).
"""

import json
from pathlib import Path

from quantkit.core.atomic import read_json
from quantkit.core.errors import QuantizeError

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ GEMM's interleave, fixed by its CUDA kernel
OFFSET = 8  # 4-bit signed (compressed-tensors) -> unsigned (AutoAWQ)
CT_SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")
INDEX = "model.safetensors.index.json"


def pack_awq(values):
    """[rows, cols] of 0..15 -> [rows, cols/8] int32 in AutoAWQ's nibble order."""
    import torch

    rows, cols = values.shape
    grouped = values.to(torch.int32).reshape(rows, cols // 8, 8)
    packed = torch.zeros(rows, cols // 8, dtype=torch.int32)
    for nibble, column in enumerate(AWQ_ORDER):
        packed |= grouped[:, :, column] << (4 * nibble)  # nibble 7 may set the sign bit: fine
    return packed


def group_size_of(quant_config: dict) -> int:
    """The one W4 asymmetric group scheme quantkit's AWQ writes; anything else cannot be repacked."""
    if quant_config.get("quant_method") != "compressed-tensors" or quant_config.get("format") != "pack-quantized":
        raise QuantizeError("only a compressed-tensors pack-quantized AWQ result can be repacked to AutoAWQ")
    groups = list(quant_config.get("config_groups", {}).values())
    weights = groups[0].get("weights", {}) if len(groups) == 1 else {}
    if (weights.get("num_bits"), weights.get("symmetric"), weights.get("strategy")) != (4, False, "group"):
        raise QuantizeError(f"the AutoAWQ layout holds 4-bit asymmetric groups, not {weights or groups}")
    return int(weights["group_size"])


def repack_module(tensors: dict, group: int) -> dict:
    """One quantized Linear's compressed-tensors tensors -> its AutoAWQ qweight/qzeros/scales."""
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    out_features, in_features = (int(n) for n in tensors["weight_shape"].tolist())
    if in_features % group or out_features % 8:
        raise QuantizeError(
            f"a {out_features}x{in_features} layer does not fit AutoAWQ's packing (group {group}, 8 outputs an int32)"
        )
    q = unpack_from_int32(tensors["weight_packed"], 4, torch.Size([out_features, in_features]), packed_dim=1)
    zeros = unpack_from_int32(tensors["weight_zero_point"], 4, torch.Size([out_features, in_features // group]), packed_dim=0)
    return {
        "qweight": pack_awq((q.to(torch.int32) + OFFSET).T.contiguous()),
        "qzeros": pack_awq((zeros.to(torch.int32) + OFFSET).T.contiguous()),
        "scales": tensors["weight_scale"].T.to(torch.float16).contiguous(),
    }


def repack(ct_dir: Path, out_dir: Path) -> dict:
    """Write the AutoAWQ GEMM checkpoint of the compressed-tensors AWQ folder ``ct_dir`` into
    ``out_dir`` (weights and config.json; other files are the caller's). Returns its
    quantization_config. Shard by shard, so memory stays about one shard."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    ct_dir, out_dir = Path(ct_dir), Path(out_dir)
    config = read_json(ct_dir / "config.json")
    quant = config.get("quantization_config") or {}
    group = group_size_of(quant)
    shards = sorted(ct_dir.glob("*.safetensors"))
    handles = {shard.name: safe_open(str(shard), "pt") for shard in shards}
    where = {key: name for name, fh in handles.items() for key in fh.keys()}
    weight_map, total = {}, 0
    for shard in shards:
        fh, tensors = handles[shard.name], {}
        for key in fh.keys():
            prefix, _, suffix = key.rpartition(".")
            if suffix == "weight_packed":
                parts = {s: handles[where[f"{prefix}.{s}"]].get_tensor(f"{prefix}.{s}") for s in CT_SUFFIXES}
                tensors.update({f"{prefix}.{k}": v for k, v in repack_module(parts, group).items()})
            elif suffix not in CT_SUFFIXES:
                tensors[key] = fh.get_tensor(key)
        save_file(tensors, str(out_dir / shard.name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard.name))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    if (ct_dir / INDEX).is_file():
        index = read_json(ct_dir / INDEX)
        index["metadata"] = {**index.get("metadata", {}), "total_size": total}
        index["weight_map"] = dict(sorted(weight_map.items()))
        (out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    # transformers and vLLM read modules_to_not_convert (names matched as prefixes/suffixes):
    # without it they would build 4-bit layers for the Linears left dense and load garbage.
    config["quantization_config"] = {
        "quant_method": "awq",
        "bits": 4,
        "group_size": group,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": sorted(quant.get("ignore") or []) or None,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return config["quantization_config"]


USAGE_AUTOAWQ = """\
Weights are 4-bit AWQ in the classic AutoAWQ GEMM layout (`qweight`/`qzeros`/`scales`), repacked
from the same calibration as quantkit's compressed-tensors AWQ (identical integer weights).

```python
# transformers >= 5 loads it with gptqmodel installed (pip install gptqmodel)
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH")
tokenizer = AutoTokenizer.from_pretrained("PATH")
```

vLLM: `vllm serve PATH --quantization awq`
"""
