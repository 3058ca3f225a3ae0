"""AWQ end to end: compressed-tensors (llm-compressor) and the classic AutoAWQ GEMM layout
(repacked from the same calibration), reloaded with plain transformers in a fresh process that
never imports quantkit (transformers loads the AutoAWQ layout through gptqmodel)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FEW = ["--calib-samples", "8", "--calib-seq-len", "64"]  # enough to exercise calibration, fast

# Runs in a fresh interpreter: plain transformers/safetensors only. Prints one JSON line.
RELOAD = r"""
import json, sys, torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer
art, probe = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
config = json.load(open(f"{art}/config.json"))
tensors = {}
with safe_open(f"{art}/model.safetensors", "pt") as fh:
    for key in fh.keys():
        t = fh.get_tensor(key)
        tensors[key] = [str(t.dtype).replace("torch.", ""), list(t.shape)]
model = AutoModelForCausalLM.from_pretrained(art)
tok = AutoTokenizer.from_pretrained(art)
mods = {name: model.get_submodule(name) for name in ("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj")}
out = model.generate(**tok("The weather today is", return_tensors="pt"), max_new_tokens=6, do_sample=False,
                     min_new_tokens=6)
report = {"quantkit_imported": "quantkit" in sys.modules, "qc": config.get("quantization_config"),
          "tensors": tensors, "new_tokens": out.shape[1] - len(tok("The weather today is")["input_ids"]),
          "classes": {n: type(m).__name__ for n, m in mods.items()},
          "bits": {n: getattr(getattr(getattr(m, "quantization_scheme", None), "weights", None), "num_bits", None)
                   for n, m in mods.items()}}
if probe == "unpack":  # independent plain-PyTorch unpacking of AutoAWQ's qweight/qzeros/scales
    name = "model.layers.0.self_attn.q_proj"
    with safe_open(f"{art}/model.safetensors", "pt") as fh:
        qw, qz, sc = (fh.get_tensor(f"{name}.{k}") for k in ("qweight", "qzeros", "scales"))
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i of each int32 holds column order[i] of its 8
    def unpack(q):
        nibbles = (q.unsqueeze(-1) >> torch.arange(0, 32, 4, dtype=torch.int32)) & 0xF
        cols = torch.empty_like(nibbles)
        cols[..., order] = nibbles
        return cols.reshape(q.shape[0], -1)
    group = config["quantization_config"]["group_size"]
    w = (unpack(qw) - unpack(qz).repeat_interleave(group, 0)).float() * sc.float().repeat_interleave(group, 0)
    x = torch.randn(4, w.shape[0])
    layer = mods[name]
    ref = x @ w + (layer.bias.float() if getattr(layer, "bias", None) is not None else 0)
    got = layer(x.to(model.dtype)).float()
    report["unpack_max_rel_err"] = ((ref - got).abs().max() / ref.abs().max()).item()
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def awq_home(tmp_path_factory):
    """A fresh quantkit cache for this module, so its calibrations are really run (and shared)
    here rather than found from an earlier test session."""
    home = tmp_path_factory.mktemp("quantkit-home")
    old = os.environ.get("QUANTKIT_HOME")
    os.environ["QUANTKIT_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("QUANTKIT_HOME", None)
    else:
        os.environ["QUANTKIT_HOME"] = old


def reload_fresh(artifact: Path, probe: str = "") -> dict:
    """Load ``artifact`` in a new interpreter that has no quantkit on its path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(artifact), probe or "-"],
        capture_output=True,
        text=True,
        env=env,
        cwd=artifact.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quantkit_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quantkit", "quantize", *args], capture_output=True, text=True, cwd=cwd, timeout=1200
    )


@pytest.fixture(scope="module")
def autoawq_qwen2(tiny_qwen2, awq_home, tmp_path_factory) -> Path:
    """``--format autoawq`` alone through the CLI: it calibrates once (llm-compressor) and repacks."""
    out = tmp_path_factory.mktemp("awq") / "qwen2-autoawq"
    proc = quantkit_cli(
        str(tiny_qwen2), "--method", "awq", "--format", "autoawq", "--ignore", "re:.*down_proj", "-o", str(out), *FEW
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def ct_qwen2_reused(autoawq_qwen2, tiny_qwen2, tmp_path_factory) -> Path:
    """compressed-tensors AWQ of the same inputs, a second CLI call: found in the cache."""
    out = tmp_path_factory.mktemp("awq") / "qwen2-awq-reused"
    proc = quantkit_cli(str(tiny_qwen2), "--method", "awq", "--ignore", "re:.*down_proj", "-o", str(out), *FEW)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def ct_llama(tiny_llama, awq_home, tmp_path_factory) -> Path:
    """compressed-tensors AWQ of the tiny Llama through the CLI (the last stdout line is the folder)."""
    out = tmp_path_factory.mktemp("awq") / "llama-awq"
    proc = quantkit_cli(str(tiny_llama), "--method", "awq", "-o", str(out), *FEW)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    return out


@pytest.fixture(scope="module")
def ct_qwen2(tiny_qwen2, awq_home, tmp_path_factory) -> Path:
    """compressed-tensors AWQ of the tiny Qwen2 through the Python API, down_proj left alone."""
    from quantkit.quantization.quantize import quantize

    out = tmp_path_factory.mktemp("awq") / "qwen2-awq"
    return quantize(tiny_qwen2, "awq", out, qwen2_options())


def qwen2_options(**overrides):
    from quantkit.quantization.awq.method import AwqOptions

    return AwqOptions(group_size=64, ignore=["re:.*down_proj"], calib_samples=8, calib_seq_len=64, **overrides)


@pytest.fixture(scope="module")
def autoawq_qwen2_shared(ct_qwen2, tiny_qwen2, tmp_path_factory) -> Path:
    """The autoawq layout of ct_qwen2's very calibration (same options): a repack from the cache."""
    from quantkit.quantization.quantize import quantize

    out = tmp_path_factory.mktemp("awq") / "qwen2-autoawq-shared"
    return quantize(tiny_qwen2, "awq", out, qwen2_options(format="autoawq"))


def test_compressed_tensors_llama_reloads_with_plain_transformers(ct_llama):
    r = reload_fresh(ct_llama)
    assert r["quantkit_imported"] is False
    qc = r["qc"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    weights = qc["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"], weights["strategy"]) == (4, 128, False, "group")
    assert "lm_head" in qc["ignore"]
    t = r["tensors"]
    # 8 int4 values per int32 along the input width; one scale and zero point per group of 128
    assert t["model.layers.0.self_attn.q_proj.weight_packed"] == ["int32", [128, 16]]
    assert t["model.layers.0.mlp.down_proj.weight_packed"] == ["int32", [128, 32]]
    assert t["model.layers.0.mlp.down_proj.weight_scale"] == ["bfloat16", [128, 2]]
    assert t["model.embed_tokens.weight"][0] == "bfloat16" and t["lm_head.weight"][0] == "bfloat16"
    assert r["bits"] == {"model.layers.0.self_attn.q_proj": 4, "model.layers.0.mlp.down_proj": 4}
    assert r["new_tokens"] == 6


def test_compressed_tensors_qwen2_ignore_keeps_down_proj_dense(ct_qwen2):
    r = reload_fresh(ct_qwen2)
    assert r["qc"]["config_groups"]["group_0"]["weights"]["group_size"] == 64
    assert {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj", "lm_head"} == set(r["qc"]["ignore"])
    t = r["tensors"]
    assert t["model.layers.0.self_attn.q_proj.weight_packed"] == ["int32", [128, 16]]
    assert t["model.layers.0.self_attn.q_proj.bias"][0] == "bfloat16"  # Qwen2's qkv biases kept
    assert t["model.layers.1.mlp.down_proj.weight"] == ["bfloat16", [128, 256]]
    assert not any(k.startswith("model.layers.1.mlp.down_proj.weight_") for k in t)
    assert r["bits"]["model.layers.0.mlp.down_proj"] is None and r["bits"]["model.layers.0.self_attn.q_proj"] == 4
    assert r["new_tokens"] == 6


def test_manifest_records_calibration_and_settings(ct_llama, ct_qwen2):
    from quantkit.core.manifest import verify
    from quantkit.quantization.calibration import DEFAULT_NAME

    for artifact, group in ((ct_llama, 128), (ct_qwen2, 64)):
        verify(artifact)
        m = json.loads((artifact / "quantkit.json").read_text())
        assert (m["method"], m["format"], m["engine"]) == ("awq", "compressed-tensors", "transformers")
        s = m["settings"]
        assert (s["bits"], s["group_size"], s["calib_samples"], s["calib_seq_len"]) == (4, group, 8, 64)
        assert s["calibration_dtype"] == "float32" and s["save_dtype"] == "bfloat16"
        cal = m["calibration"]
        assert cal["source"] == DEFAULT_NAME and cal["samples"] == 8 and cal["seq_len"] == 64
        assert len(cal["sha256"]) == 64 and cal["chat_samples"] == 4
        assert m["versions"]["llmcompressor"] == "0.14.0.1"
        assert "quantized_by: quantkit" in (artifact / "README.md").read_text()
    # same calibration settings and data: the same hash, whatever the model (same tokenizer)
    hashes = {json.loads((a / "quantkit.json").read_text())["calibration"]["sha256"] for a in (ct_llama, ct_qwen2)}
    assert len(hashes) == 1


def test_gptq_quantizer_after_awq_is_its_own_calibration(ct_llama, tiny_llama, tmp_path, monkeypatch):
    """`quantizer="gptq"`: the same AWQ scaling, then llm-compressor's GPTQModifier instead of
    rounding to nearest. It is keyed apart in the cache (not the RTN result reused), recorded in
    the manifest, and rounds differently from RTN on the same inputs."""
    from safetensors.torch import load_file

    # A cache of its own: the module's keeps only its newest entries, which later tests reuse.
    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))

    from quantkit.quantization.awq.method import AwqOptions
    from quantkit.quantization.quantize import quantize

    out = quantize(
        tiny_llama, "awq", tmp_path / "llama-awq-gptq", AwqOptions(quantizer="gptq", calib_samples=8, calib_seq_len=64)
    )
    rtn, gptq = (json.loads((a / "quantkit.json").read_text()) for a in (ct_llama, out))
    assert rtn["settings"]["quantizer"] == "rtn" and gptq["settings"]["quantizer"] == "gptq"
    assert gptq["calibration_cache"]["reused"] is False
    assert gptq["calibration_cache"]["key"] != rtn["calibration_cache"]["key"]
    name = "model.layers.0.mlp.down_proj.weight_packed"
    packed = [load_file(str(a / "model.safetensors"))[name] for a in (ct_llama, out)]
    assert packed[0].shape == packed[1].shape and (packed[0] != packed[1]).any()
    assert reload_fresh(out)["new_tokens"] == 6  # plain transformers loads and generates


def test_autoawq_format_matches_an_independent_unpacking(autoawq_qwen2):
    r = reload_fresh(autoawq_qwen2, probe="unpack")
    assert r["quantkit_imported"] is False
    qc = r["qc"]
    assert (qc["quant_method"], qc["version"], qc["bits"], qc["group_size"], qc["zero_point"]) == ("awq", "gemm", 4, 128, True)
    assert qc["modules_to_not_convert"] == ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    t = r["tensors"]
    # classic GEMM layout: qweight [in, out/8], qzeros [in/group, out/8], scales [in/group, out] fp16
    assert t["model.layers.0.self_attn.q_proj.qweight"] == ["int32", [128, 16]]
    assert t["model.layers.0.self_attn.q_proj.qzeros"] == ["int32", [1, 16]]
    assert t["model.layers.0.self_attn.q_proj.scales"] == ["float16", [1, 128]]
    assert t["model.layers.0.self_attn.q_proj.bias"][0] == "bfloat16"  # Qwen2's qkv biases kept
    assert t["model.layers.0.mlp.down_proj.weight"] == ["bfloat16", [128, 256]]
    assert not any(k.endswith(("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")) for k in t)
    assert "Awq" in r["classes"]["model.layers.0.self_attn.q_proj"]
    assert r["classes"]["model.layers.0.mlp.down_proj"] == "Linear"
    assert r["unpack_max_rel_err"] < 0.02  # bf16 rounding only
    assert r["new_tokens"] == 6
    m = json.loads((autoawq_qwen2 / "quantkit.json").read_text())
    assert m["format"] == "autoawq" and m["settings"]["version"] == "gemm" and m["calibration"]["samples"] == 8
    assert m["calibration_cache"]["reused"] is False  # standalone: it calibrated itself


def test_a_second_call_reuses_the_calibration_in_seconds(autoawq_qwen2, ct_qwen2_reused):
    first = json.loads((autoawq_qwen2 / "quantkit.json").read_text())
    second = json.loads((ct_qwen2_reused / "quantkit.json").read_text())
    assert second["format"] == "compressed-tensors" and second["calibration_cache"]["reused"] is True
    assert second["calibration_cache"]["key"] == first["calibration_cache"]["key"]
    assert second["calibration"] == first["calibration"]
    assert second["run"]["wall_s"] < 10


def dequantized(artifact: Path) -> dict:
    """name -> (integer weights minus zero points [out, in], per-element scales [out, in]), read
    from either layout: compressed-tensors through its own unpacking, AutoAWQ by a plain unpacker."""
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file

    t = load_file(str(artifact / "model.safetensors"))
    group = json.loads((artifact / "config.json").read_text())["quantization_config"].get("group_size")
    out, order = {}, [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i of an int32 holds column order[i] of its 8

    def unpack(packed):
        nibbles = (packed.unsqueeze(-1) >> torch.arange(0, 32, 4, dtype=torch.int32)) & 0xF
        cols = torch.empty_like(nibbles)
        cols[..., order] = nibbles
        return cols.reshape(packed.shape[0], -1)

    for key in t:
        name, _, suffix = key.rpartition(".")
        if suffix == "weight_packed":
            shape = torch.Size(t[f"{name}.weight_shape"].tolist())
            scale = t[f"{name}.weight_scale"]
            q = unpack_from_int32(t[key], 4, shape)
            zp = unpack_from_int32(t[f"{name}.weight_zero_point"], 4, scale.shape, packed_dim=0)
            g = shape[1] // scale.shape[1]
            out[name] = ((q.int() - zp.int().repeat_interleave(g, 1)), scale.float().repeat_interleave(g, 1))
        elif suffix == "qweight":
            q, z = unpack(t[key]), unpack(t[f"{name}.qzeros"]).repeat_interleave(group, 0)
            out[name] = ((q - z).T, t[f"{name}.scales"].float().repeat_interleave(group, 0).T)
    return out


# Fresh process: both artifacts in their runtimes (plain transformers; the AutoAWQ layout through
# gptqmodel's AWQ kernels), logits over the same ids.
BOTH_LOGITS = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
torch.manual_seed(0)
ids = torch.randint(0, 1000, (1, 24))
rows = []
for art in sys.argv[1:]:
    model = AutoModelForCausalLM.from_pretrained(art)
    with torch.no_grad():
        rows.append(model(ids).logits[0].float())
    classes = sorted({type(m).__name__ for n, m in model.named_modules() if n.endswith("q_proj")})
    rows[-1] = (rows[-1], classes)
(a, ca), (b, cb) = rows
print(json.dumps({"finite": bool(torch.isfinite(a).all() and torch.isfinite(b).all()),
                  "max_diff": (a - b).abs().max().item(), "max_logit": a.abs().max().item(),
                  "top1": (a.argmax(-1) == b.argmax(-1)).float().mean().item(), "classes": [ca, cb],
                  "quantkit": "quantkit" in sys.modules}))
"""


def test_both_formats_of_one_calibration_hold_the_same_weights_and_agree(ct_qwen2, autoawq_qwen2_shared):
    import torch

    m = json.loads((autoawq_qwen2_shared / "quantkit.json").read_text())
    assert m["format"] == "autoawq" and m["calibration_cache"]["reused"] is True  # no second calibration
    assert m["run"]["wall_s"] < 10
    assert m["calibration"] == json.loads((ct_qwen2 / "quantkit.json").read_text())["calibration"]
    ct, awq = dequantized(ct_qwen2), dequantized(autoawq_qwen2_shared)
    assert sorted(ct) == sorted(awq) and len(ct) == 2 * 6  # 2 layers x 6 Linears (down_proj ignored)
    for name in ct:
        (ct_int, ct_scale), (awq_int, awq_scale) = ct[name], awq[name]
        assert torch.equal(ct_int, awq_int), name  # the very same integers
        # The only difference is the fp16 rounding of the bf16 scales, and a bf16 value inside
        # fp16's normal range (>= 6.1e-5) is exact in fp16: so the weights agree exactly here.
        bound = ct_int.abs().max() * (ct_scale.half().float() - ct_scale).abs().max()
        assert (ct_int * ct_scale - awq_int * awq_scale).abs().max() <= bound, name
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", BOTH_LOGITS, str(ct_qwen2), str(autoawq_qwen2_shared)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ct_qwen2.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"compressed-tensors vs autoawq logits: {r}")
    assert r["quantkit"] is False and r["finite"], r
    assert "Awq" in "".join(r["classes"][1]) and "Awq" not in "".join(r["classes"][0]), r
    assert r["max_diff"] < 0.02 * r["max_logit"] and r["top1"] >= 0.9, r  # two kernels, one set of weights


@pytest.mark.parametrize(
    "args, message",
    [
        (["--group-size", "48"], "--group-size 48 does not divide the input width 128"),
        (["--bits", "8"], "--bits 8 is not one of 4"),
        (["--format", "gguf"], "--format 'gguf' is not one of compressed-tensors, autoawq"),
        (["--calib", "{tmp}/missing.txt"], "does not exist"),
        (["--calib", "{tmp}/empty.txt"], "holds no text"),
        (["--calib", "{tmp}/bad.jsonl"], "bad.jsonl:2 is not valid JSON"),
    ],
)
def test_bad_inputs_fail_in_one_line_leaving_nothing(tiny_llama, tmp_path, args, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path) for a in args]
    proc = quantkit_cli(str(tiny_llama), "--method", "awq", "-o", str(out), *args, cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.txt"]


def test_smollm2_default_group_size_128_is_refused_with_a_fix(smollm2, tmp_path):
    from quantkit.core.errors import PreflightError
    from quantkit.quantization.awq.method import AwqOptions
    from quantkit.quantization.quantize import quantize

    with pytest.raises(PreflightError) as err:
        quantize(smollm2, "awq", tmp_path / "x", AwqOptions(group_size=128))
    assert "does not divide the input width 576" in str(err.value) and "`group_size=64`" in str(err.value)
    assert list(tmp_path.iterdir()) == []


# Fresh process again: base vs quantized logits over a fixed text, and a chat answer.
QUALITY = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
base_dir, art = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(art)
text = ("The history of the printing press begins in the fifteenth century. Before it, books were copied by "
        "hand, which made them rare and expensive. Movable type changed that: a page could be set once and "
        "printed many times, so ideas travelled faster than ever before across Europe and beyond.")
ids = tok(text, return_tensors="pt")["input_ids"]
def logits(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        return model(ids).logits[0].float(), model
base, _ = logits(base_dir)
quant, model = logits(art)
cos = torch.nn.functional.cosine_similarity(base, quant, dim=-1).mean().item()
top1 = (base.argmax(-1) == quant.argmax(-1)).float().mean().item()
chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**chat, max_new_tokens=24, do_sample=False)
answer = tok.decode(out[0, chat["input_ids"].shape[1]:], skip_special_tokens=True)
print(json.dumps({"cos": cos, "top1": top1, "answer": answer, "quantkit": "quantkit" in sys.modules}))
"""


@pytest.mark.slow
def test_smollm2_awq_stays_close_to_base_and_chats(smollm2, tmp_path):
    out = tmp_path / "smollm2-awq"
    proc = quantkit_cli(
        str(smollm2), "--method", "awq", "--group-size", "64", "--calib-samples", "16", "--calib-seq-len", "64", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    q = subprocess.run(
        [sys.executable, "-c", QUALITY, str(smollm2), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert q.returncode == 0, q.stderr[-3000:]
    r = json.loads(q.stdout.strip().splitlines()[-1])
    assert r["quantkit"] is False
    assert r["cos"] > 0.9, r
    assert r["top1"] > 0.7, r
    assert "Paris" in r["answer"], r
    m = json.loads((out / "quantkit.json").read_text())
    assert m["settings"]["group_size"] == 64 and m["calibration"]["samples"] == 16
    assert m["bits_per_weight"] < 8  # 4-bit layers + bf16 embeddings (SmolLM2 ties them)


def test_awq_on_a_gpu_keeps_the_model_on_the_cpu_and_clears_the_session(tiny_llama, tmp_path, monkeypatch):
    """What runs on a GPU machine, with the device faked: the model must reach oneshot on the CPU
    (llm-compressor's sequential pipeline onloads one layer at a time) and never be moved whole;
    afterwards llm-compressor's session no longer holds it."""
    import llmcompressor
    import torch
    from llmcompressor.core import active_session

    from quantkit.core import preflight
    from quantkit.core.modelinfo import load_config
    from quantkit.quantization.awq import method as awq

    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(preflight, "resolve_device", lambda device: "cuda")
    moves, seen = [], {}
    original_to = torch.nn.Module.to

    def recording_to(self, *args, **kwargs):
        if isinstance(self, llmcompressor_models()) or any(str(a).startswith("cuda") for a in (*args, *kwargs.values())):
            moves.append((type(self).__name__, args, kwargs))
        return original_to(self, *args, **kwargs)

    def llmcompressor_models():
        from transformers import PreTrainedModel

        return PreTrainedModel

    original_oneshot = llmcompressor.oneshot

    def recording_oneshot(*args, model, **kwargs):
        seen["devices"] = {p.device.type for p in model.parameters()}
        seen["dtype"] = model.dtype
        seen["moves_before"] = list(moves)
        return original_oneshot(*args, model=model, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    monkeypatch.setattr(llmcompressor, "oneshot", recording_oneshot)
    options = awq.AwqOptions(calib_samples=2, calib_seq_len=16)
    folder, record, reused = awq.calibrated(tiny_llama, options, 128, load_config(tiny_llama))
    assert seen["devices"] == {"cpu"} and seen["moves_before"] == []  # no model.to("cuda") before calibration
    assert seen["dtype"] == torch.bfloat16 and record["settings"]["calibration_dtype"] == "bfloat16"
    assert not any(str(a).startswith("cuda") for _, args, kw in moves for a in (*args, *kw.values())), moves
    assert reused is False and (folder / "model.safetensors").is_file()
    lifecycle = active_session().lifecycle
    assert lifecycle.recipe.modifiers == [] and not lifecycle.initialized_, "the session still holds the run"


RECIPE = """\
name: two-formats
model: {id: bundled:smollm2-135m-instruct}
artifacts:
  - name: awq
    method: awq
    format: %s
    group_size: 64
"""


def test_one_recipe_entry_asks_for_several_formats():
    from quantkit.pipeline.recipe import parse_recipe

    recipe = parse_recipe(RECIPE % "[compressed-tensors, autoawq]")
    assert [(a.name, a.options.format, a.options.group_size) for a in recipe.artifacts] == [
        ("awq", "compressed-tensors", 64),
        ("awq-autoawq", "autoawq", 64),
    ]
    assert [(a.name, a.options.format) for a in parse_recipe(RECIPE % "autoawq").artifacts] == [("awq", "autoawq")]
    smol = [
        (a.name, a.options.format)
        for a in parse_recipe(open("recipes/smollm2-135m-instruct.yaml").read()).artifacts
        if a.method == "awq"
    ]
    assert smol == [("awq", "compressed-tensors"), ("awq-autoawq", "autoawq")]


@pytest.mark.parametrize(
    "value, message",
    [
        ("[compressed-tensors, gguf]", "artifacts[0].format[1]: 'gguf' is not one of"),
        ("[autoawq, autoawq]", "artifacts[0].format: a list of formats needs at least one, each once"),
        ("[]", "artifacts[0].format: a list of formats needs at least one, each once"),
    ],
)
def test_bad_format_lists_are_refused_with_the_line(value, message):
    from quantkit.pipeline.recipe import RecipeError, parse_recipe

    with pytest.raises(RecipeError) as err:
        parse_recipe(RECIPE % value, "r.yaml")
    assert f"r.yaml:6: {message}" in str(err.value)


def test_an_expanded_name_that_clashes_is_refused():
    from quantkit.pipeline.recipe import RecipeError, parse_recipe

    text = RECIPE % "[compressed-tensors, autoawq]" + "  - name: awq-autoawq\n    method: nf4\n"
    with pytest.raises(RecipeError, match="artifact name 'awq-autoawq' is used twice"):
        parse_recipe(text, "r.yaml")
