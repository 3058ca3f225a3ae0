"""GPTQ (W4A16), W8A8-INT8 (SmoothQuant + GPTQ) and FP8-dynamic through llm-compressor on the tiny
Llama: each artifact reloads and generates in plain transformers in a fresh process that never
imports quantkit, its manifest records what made it, and its weights, unpacked here independently,
stay close to the originals (bounds measured on this fixture, with headroom)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FEW = ["--calib-samples", "8", "--calib-seq-len", "64"]  # enough to exercise calibration, fast
LAYERS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)

# Runs in a fresh interpreter: plain transformers/safetensors only. Prints one JSON line.
RELOAD = r"""
import json, sys, torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer
art = sys.argv[1]
config = json.load(open(f"{art}/config.json"))
with safe_open(f"{art}/model.safetensors", "pt") as fh:
    tensors = {k: [str(fh.get_tensor(k).dtype).replace("torch.", ""), list(fh.get_tensor(k).shape)] for k in fh.keys()}
model = AutoModelForCausalLM.from_pretrained(art)
tok = AutoTokenizer.from_pretrained(art)
q = model.get_submodule("model.layers.0.self_attn.q_proj")
scheme = getattr(q, "quantization_scheme", None)
out = model.generate(**tok("The weather today is", return_tensors="pt"), max_new_tokens=6, do_sample=False,
                     min_new_tokens=6)
print(json.dumps({"quantkit_imported": "quantkit" in sys.modules, "qc": config.get("quantization_config"),
                  "tensors": tensors, "new_tokens": out.shape[1] - len(tok("The weather today is")["input_ids"]),
                  "weight_bits": getattr(getattr(scheme, "weights", None), "num_bits", None),
                  "activation_bits": getattr(getattr(scheme, "input_activations", None), "num_bits", None),
                  "runtime_weight_dtype": str(q.weight.dtype).replace("torch.", "")}))
"""


def reload_fresh(artifact: Path) -> dict:
    """Load ``artifact`` in a new interpreter that has no quantkit on its path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(artifact)], capture_output=True, text=True, env=env, cwd=artifact.parent, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quantkit_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quantkit", "quantize", *args], capture_output=True, text=True, cwd=cwd, timeout=1200
    )


def manifest(artifact: Path) -> dict:
    from quantkit.core.manifest import verify

    verify(artifact)  # every file matches its recorded size and sha256
    return json.loads((artifact / "quantkit.json").read_text())


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(folder / "model.safetensors")).items()}


def rel_err(approx, ref) -> float:
    return float((approx - ref).norm() / ref.norm())


def expected_calibration_hash(model_dir: Path, samples: int = 8, seq_len: int = 64) -> str:
    """The hash quantkit's calibration set has for these settings, built here on its own."""
    from transformers import AutoTokenizer

    from quantkit.quantization.calibration import build

    return build(AutoTokenizer.from_pretrained(model_dir), None, samples, seq_len).sha256


@pytest.fixture(scope="module")
def gptq_llama(tiny_llama, tmp_path_factory) -> Path:
    """GPTQ at group 64 through the CLI (the last stdout line is the folder)."""
    out = tmp_path_factory.mktemp("llmc") / "llama-gptq"
    proc = quantkit_cli(str(tiny_llama), "--method", "gptq", "--group-size", "64", "-o", str(out), *FEW)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    return out


@pytest.fixture(scope="module")
def gptq_llama_no_actorder(tiny_llama, tmp_path_factory) -> Path:
    from quantkit.quantization.quantize import quantize
    from quantkit.quantization.registry import make_options

    out = tmp_path_factory.mktemp("llmc") / "llama-gptq-none"
    return quantize(
        tiny_llama, "gptq", out, make_options("gptq", dict(group_size=64, actorder="none", calib_samples=8, calib_seq_len=64))
    )


@pytest.fixture(scope="module")
def w8a8_llama(tiny_llama, tmp_path_factory) -> Path:
    from quantkit.quantization.quantize import quantize
    from quantkit.quantization.w8a8 import W8a8Options

    out = tmp_path_factory.mktemp("llmc") / "llama-w8a8"
    return quantize(tiny_llama, "w8a8", out, W8a8Options(calib_samples=8, calib_seq_len=64))


@pytest.fixture(scope="module")
def fp8_llama(tiny_llama, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llmc") / "llama-fp8"
    proc = quantkit_cli(str(tiny_llama), "--method", "fp8", "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_gptq_reloads_with_plain_transformers(gptq_llama):
    r = reload_fresh(gptq_llama)
    assert r["quantkit_imported"] is False
    qc = r["qc"]
    assert (qc["quant_method"], qc["format"]) == ("compressed-tensors", "pack-quantized")
    w = qc["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["group_size"], w["symmetric"], w["strategy"], w["actorder"]) == (4, 64, True, "group", "static")
    assert qc["config_groups"]["group_0"]["input_activations"] is None and qc["ignore"] == ["lm_head"]
    t = r["tensors"]
    # 8 int4 per int32 along the input width; one bf16 scale per group of 64; symmetric: no zero point
    assert t["model.layers.0.self_attn.q_proj.weight_packed"] == ["int32", [128, 16]]
    assert t["model.layers.0.self_attn.q_proj.weight_scale"] == ["bfloat16", [128, 2]]
    assert t["model.layers.0.mlp.down_proj.weight_scale"] == ["bfloat16", [128, 4]]
    assert not any(k.endswith(("weight_zero_point", "weight_g_idx")) for k in t)  # static order: no runtime permutation
    assert t["lm_head.weight"][0] == "bfloat16"
    assert r["weight_bits"] == 4 and r["activation_bits"] is None and r["new_tokens"] == 6


def test_gptq_manifest_records_bits_group_actorder_and_calibration(gptq_llama, tiny_llama):
    from quantkit.quantization.calibration import DEFAULT_NAME

    m = manifest(gptq_llama)
    assert (m["method"], m["format"], m["engine"]) == ("gptq", "compressed-tensors", "transformers")
    s = m["settings"]
    assert (s["bits"], s["group_size"], s["symmetric"], s["calib_samples"], s["calib_seq_len"]) == (4, 64, True, 8, 64)
    assert s["gptq"] == {"dampening_frac": 0.01, "actorder": "static"}
    assert s["calibration_dtype"] == "float32" and s["save_dtype"] == "bfloat16"
    cal = m["calibration"]
    assert (cal["source"], cal["samples"], cal["seq_len"]) == (DEFAULT_NAME, 8, 64)
    assert cal["sha256"] == expected_calibration_hash(tiny_llama)
    assert m["verification"]["bits"] == 4 and m["verification"]["top1"] >= m["verification"]["top1_min"]
    assert m["versions"]["llmcompressor"] == "0.14.0.1"
    assert "4-bit GPTQ" in (gptq_llama / "README.md").read_text()


def unpack_gptq(t: dict, name: str):
    """A pack-quantized symmetric int4 layer as float weights: integers x the scale of their group."""
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    shape = torch.Size(t[f"{name}.weight_shape"].tolist())
    scale = t[f"{name}.weight_scale"]
    ints = unpack_from_int32(t[f"{name}.weight_packed"], 4, shape).float()
    assert ints.min() >= -8 and ints.max() <= 7
    return ints * scale.repeat_interleave(shape[1] // scale.shape[1], dim=1), ints


def test_gptq_dequantized_weights_stay_close_to_the_originals(gptq_llama, tiny_llama):
    base, t = tensors(tiny_llama), tensors(gptq_llama)
    errors = {}
    for layer in range(2):
        for name in LAYERS:
            key = f"model.layers.{layer}.{name}"
            errors[key] = rel_err(unpack_gptq(t, key)[0], base[f"{key}.weight"])
    print("gptq relative weight error (Frobenius):", {k: round(v, 4) for k, v in errors.items()})
    # Measured 0.13-0.16 at group 64 on this fixture (4-bit symmetric: 16 levels of N(0, 0.02)
    # weights); a wrong scale layout or unpacking gives ~1.
    assert len(errors) == 14 and max(errors.values()) < 0.2
    assert t["model.embed_tokens.weight"].equal(base["model.embed_tokens.weight"].bfloat16().float())


def test_gptq_actorder_none_reaches_llm_compressor(gptq_llama, gptq_llama_no_actorder):
    """actorder none used to be overridden by GPTQModifier's own default (static)."""
    import torch

    m = manifest(gptq_llama_no_actorder)
    assert m["settings"]["gptq"]["actorder"] == "none"
    qc = json.loads((gptq_llama_no_actorder / "config.json").read_text())["quantization_config"]
    assert qc["config_groups"]["group_0"]["weights"]["actorder"] is None
    static, none = tensors(gptq_llama), tensors(gptq_llama_no_actorder)
    key = "model.layers.0.mlp.down_proj"
    assert m["calibration"]["sha256"] == manifest(gptq_llama)["calibration"]["sha256"]
    assert not torch.equal(unpack_gptq(static, key)[1], unpack_gptq(none, key)[1])  # another column order


def test_w8a8_reloads_with_plain_transformers_dequantized(w8a8_llama, tiny_llama):
    r = reload_fresh(w8a8_llama)
    assert r["quantkit_imported"] is False
    qc = r["qc"]
    assert (qc["quant_method"], qc["format"]) == ("compressed-tensors", "int-quantized")
    w, a = qc["config_groups"]["group_0"]["weights"], qc["config_groups"]["group_0"]["input_activations"]
    assert (w["num_bits"], w["type"], w["strategy"], w["symmetric"], w["dynamic"]) == (8, "int", "channel", True, False)
    assert (a["num_bits"], a["type"], a["strategy"], a["dynamic"]) == (8, "int", "token", True)
    t = r["tensors"]
    assert t["model.layers.0.self_attn.q_proj.weight"] == ["int8", [128, 128]]
    assert t["model.layers.0.self_attn.q_proj.weight_scale"] == ["bfloat16", [128, 1]]
    assert t["model.layers.0.mlp.down_proj.weight"] == ["int8", [128, 256]]
    assert t["lm_head.weight"][0] == "bfloat16"
    # transformers keeps the scheme (activations quantized per token) but runs dense weights
    assert r["weight_bits"] == 8 and r["activation_bits"] == 8 and r["new_tokens"] == 6
    assert r["runtime_weight_dtype"] == "bfloat16"
    m = manifest(w8a8_llama)
    s = m["settings"]
    assert (m["method"], s["bits"], s["activation_bits"], s["scheme"]) == ("w8a8", 8, 8, "W8A8")
    assert s["smoothquant"] == {"smoothing_strength": 0.8} and (s["calib_samples"], s["calib_seq_len"]) == (8, 64)
    assert m["calibration"]["sha256"] == expected_calibration_hash(tiny_llama)  # the set AWQ and GPTQ use
    assert m["runtime"]["transformers"] == "dequantized" and "int8" in m["runtime"]["note"]
    assert m["verification"]["bits"] == 8 and m["verification"]["top1"] >= 0.9  # measured 0.97
    assert "dequantized" in (w8a8_llama / "README.md").read_text()


def test_w8a8_smooths_then_keeps_weights_within_int8_error(w8a8_llama, tiny_llama):
    """SmoothQuant divides each norm's weight by per-channel factors and multiplies the following
    projections' input columns by them; undoing that, int8 x scale is the original weight."""
    base, t = tensors(tiny_llama), tensors(w8a8_llama)
    errors = {}
    for layer in range(2):
        p = f"model.layers.{layer}."
        smooth = {
            "input_layernorm": base[p + "input_layernorm.weight"] / t[p + "input_layernorm.weight"],
            "post_attention_layernorm": base[p + "post_attention_layernorm.weight"] / t[p + "post_attention_layernorm.weight"],
        }
        assert smooth["input_layernorm"].min() > 1.5  # smoothing did happen (measured factors 3.8-7.6)
        for name in LAYERS:
            norm = {
                "self_attn.q_proj": "input_layernorm",
                "self_attn.k_proj": "input_layernorm",
                "self_attn.v_proj": "input_layernorm",
                "mlp.gate_proj": "post_attention_layernorm",
                "mlp.up_proj": "post_attention_layernorm",
            }.get(name)
            w = t[f"{p}{name}.weight"] * t[f"{p}{name}.weight_scale"]
            if norm:
                w = w / smooth[norm]
            errors[p + name] = rel_err(w, base[f"{p}{name}.weight"])
    print("w8a8 relative weight error (Frobenius):", {k: round(v, 4) for k, v in errors.items()})
    assert max(errors.values()) < 0.02  # measured 0.009-0.011 (int8 steps and the bf16 norm weights)


def test_fp8_reloads_on_the_cpu_and_its_weights_are_float8(fp8_llama, tiny_llama):
    r = reload_fresh(fp8_llama)
    assert r["quantkit_imported"] is False
    qc = r["qc"]
    assert (qc["quant_method"], qc["format"]) == ("compressed-tensors", "float-quantized")
    w, a = qc["config_groups"]["group_0"]["weights"], qc["config_groups"]["group_0"]["input_activations"]
    assert (w["num_bits"], w["type"], w["strategy"], w["dynamic"]) == (8, "float", "channel", False)
    assert (a["num_bits"], a["type"], a["strategy"], a["dynamic"]) == (8, "float", "token", True)
    t = r["tensors"]
    quantized = [k for k, (dtype, _) in t.items() if dtype == "float8_e4m3fn"]
    assert len(quantized) == 14 and all(k.endswith("_proj.weight") for k in quantized)
    assert t["model.layers.0.self_attn.q_proj.weight_scale"] == ["bfloat16", [128, 1]]
    assert t["lm_head.weight"][0] == "bfloat16" and t["model.norm.weight"][0] == "bfloat16"
    assert r["weight_bits"] == 8 and r["activation_bits"] == 8 and r["new_tokens"] == 6
    assert r["runtime_weight_dtype"] == "bfloat16"  # dequantized: no FP8 matmul on this CPU
    base, art = tensors(tiny_llama), tensors(fp8_llama)
    errors = [
        rel_err(
            art[f"model.layers.{i}.{n}.weight"] * art[f"model.layers.{i}.{n}.weight_scale"], base[f"model.layers.{i}.{n}.weight"]
        )
        for i in range(2)
        for n in LAYERS
    ]
    print("fp8 relative weight error (Frobenius):", [round(e, 4) for e in errors])
    assert max(errors) < 0.04  # measured 0.026 (e4m3: 3 mantissa bits)
    m = manifest(fp8_llama)
    assert (m["method"], m["settings"]["bits"], m["settings"]["scheme"]) == ("fp8", 8, "FP8_DYNAMIC")
    assert m["settings"]["data_free"] is True and "calibration" not in m
    assert m["runtime"]["transformers"] == "dequantized" and "8.9" in m["runtime"]["kernels"]
    assert m["verification"]["bits"] == 8 and m["verification"]["top1"] >= 0.8  # measured 0.87
    assert "compute capability 8.9" in (fp8_llama / "README.md").read_text()


def test_bench_of_an_fp8_artifact_says_how_it_ran(fp8_llama, tiny_llama):
    from quantkit.benchmark.bench import BenchOptions, bench

    result = bench(
        fp8_llama,
        base=tiny_llama,
        options=BenchOptions(prompt_tokens=16, gen_tokens=4, repetitions=1, warmup=0, smoke=False, eval_tokens=64, threads=1),
    )
    assert result.dequantized and result.bits == 8 and result.method == "fp8"
    note = next(n for n in result.notes if n.startswith("runs dequantized"))
    assert "FP8" in note and "8.9" in note, result.notes
    assert result.quality["tokenizer_parity"] and result.decode.mean > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "gptq", "--actorder", "group"], "'group' is not one of"),
        (["--method", "w8a8", "--bits", "4"], "--bits"),
        (["--method", "w8a8", "--smoothing-strength", "1.5"], "--smoothing-strength"),
        (["--method", "fp8", "--calib-samples", "8"], "--calib-samples is not used by --method fp8"),
        (["--method", "fp8", "--ignore", "re:.*_proj"], "ignore leaves no layer to quantize"),
    ],
)
def test_bad_inputs_fail_in_one_line_leaving_nothing(tiny_llama, tmp_path, args, message):
    out = tmp_path / "out"
    proc = quantkit_cli(str(tiny_llama), "-o", str(out), *args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []


def test_footprints_and_registry():
    from quantkit.core.estimate import quantize_cost
    from quantkit.quantization.registry import METHODS, get_method, make_options

    assert {"gptq", "w8a8", "fp8"} <= set(METHODS)
    config = json.loads((Path(__file__).parent / "fixtures/configs/llama-3.1-8b-instruct.json").read_text())
    costs = {}
    for name in ("gptq", "w8a8", "fp8"):
        method = get_method(name)
        fp = method.footprint(make_options(name))
        assert method.supports(config) is None and fp.dense_runtime
        costs[name] = quantize_cost(config, fp, "cpu")
    assert get_method("w8a8").footprint(make_options("w8a8")).bits[0] == pytest.approx(8, abs=0.1)
    assert costs["fp8"].disk_bytes > costs["gptq"].disk_bytes  # 8 bits vs 4 on disk
    assert costs["fp8"].seconds < costs["w8a8"].seconds  # data-free: no calibration


def test_compressed_tensors_cards_carry_their_own_methods_tags(gptq_llama, w8a8_llama, fp8_llama):
    """Real artifacts' cards (issue 23: every compressed-tensors card was tagged awq, 4-bit, and
    named after its folder): each carries its own method's tags, the runtimes that load it
    (transformers and vLLM), and the artifact's name, not the method's."""
    from huggingface_hub import ModelCard

    expected = {
        gptq_llama: ({"gptq", "4-bit"}, "GPTQ"),
        w8a8_llama: ({"w8a8", "int8", "8-bit"}, "W8A8"),
        fp8_llama: ({"fp8", "8-bit"}, "FP8"),
    }
    for folder, (tags, label) in expected.items():
        card = ModelCard.load(folder / "README.md")
        have = set(card.data.tags)
        assert tags | {"compressed-tensors", "quantkit"} <= have and not {"awq"} & have, (folder.name, have)
        assert ({"4-bit", "8-bit"} - tags) & have == set(), (folder.name, have)
        assert card.data.model_name.endswith(f"-{label}") and card.data.model_name != folder.name
        assert "Loads without quantkit in: transformers, vLLM." in card.text
        manifest = json.loads((folder / "quantkit.json").read_text())
        assert manifest["runtimes"] == ["transformers", "vllm"] and manifest["name"] == card.data.model_name
