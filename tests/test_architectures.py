"""The architecture matrix: tiny random checkpoints of many transformers architectures
(tests/models.py ARCHITECTURES) through every method. Each cell is either a verified artifact
(quantize's own verification passed, and this test reloads it in its runtime and reads finite
logits) or an up-front refusal in one line (a PreflightError from ``supports``/``check``, before
any weight is loaded); nothing else is allowed.

The default run takes a representative slice (Gemma 3 text through every method, refusals, the
mappings quantkit adds to llm-compressor's); ``make architectures`` runs the whole matrix with
QUANTKIT_ARCH_MATRIX=full and writes docs/architectures.md (QUANTKIT_ARCH_TABLE) from every cell
recorded for these library versions; QUANTKIT_ARCH_RESUME=1 runs only the cells not yet passed.
"""

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from models import ARCHITECTURES, arch_config, fixture_cache, tiny_arch_dir

from quantkit.core.errors import PreflightError
from quantkit.core.modelinfo import estimate_params, load_config
from quantkit.quantization.quantize import quantize
from quantkit.quantization.registry import METHODS as REGISTERED
from quantkit.quantization.registry import get_method, make_options

METHODS = tuple(REGISTERED)  # every registered method is in the full matrix
# Tiny calibrations (tests/test_quantize_llmc.py's settings): enough to exercise the pass, cheap.
OPTIONS = {m: dict(calib_samples=4, calib_seq_len=64) for m in ("gptq", "w8a8")}
OPTIONS |= {"awq": dict(calib_samples=8, calib_seq_len=64), "gguf": dict(gguf_types=["Q8_0"])}
# The cells that must be refused up front, and a word their one-line reason must carry.
REFUSED = {("qwen3_moe", "awq"): "mixture-of-experts", ("mixtral", "awq"): "mixture-of-experts"}
# The fixture pairs SmolLM2's vocabulary with the model type's tokenizer class; transformers maps
# qwen2 to Qwen2Tokenizer, whose split rules differ, and llama.cpp's converter rightly refuses a
# pre-tokenizer it does not know (a real Qwen2 tokenizer converts: FACTS.md).
REFUSED[("qwen2", "gguf")] = "pre-tokenizer"
# Gemma 1/2's converters read only a SentencePiece tokenizer.model, which the fixture lacks (real
# Gemma checkpoints ship one): refused before conversion, not failed during it.
REFUSED.update({("gemma", "gguf"): "tokenizer.model", ("gemma2", "gguf"): "tokenizer.model"})
# transformers' bitsandbytes integration swaps only modules that are exactly nn.Linear (or Conv1D);
# Falcon's layers are FalconLinear, a subclass, so nothing would be quantized.
REFUSED.update({("falcon", "nf4"): "nothing would be quantized", ("falcon", "int8"): "nothing would be quantized"})
# GGUF cells whose input breaks an assumption llama.cpp's converter makes of the real checkpoints
# (the tiny fixtures differ from them there): refused by the GGUF preflight, before conversion.
REFUSED.update(
    {
        ("phi3", "gguf"): "named Phi-3",  # llama.cpp looks up </s>, <unk>, <s> by text in a file named Phi-3
        ("glm4", "gguf"): "<|user|>",  # GLM-4's converter reads GLM's chat tokens
        ("cohere", "gguf"): "lm_head.weight",  # Command-R ties its embeddings; the fixture does not
        ("phi", "gguf"): "4 x hidden_size",  # phi-2's converter ignores intermediate_size
        ("falcon", "gguf"): "multi_query",  # transformers 5 writes num_kv_heads = heads for MQA Falcon
        ("gpt_neox", "gguf"): "rotary_pct",  # transformers 5 writes partial_rotary_factor instead
    }
)
# llm-compressor saves Mixtral's experts linearized and transformers loads them back as new random
# ones (verification caught it: top token 38%): refused up front for every llm-compressor method.
REFUSED.update({("mixtral", m): "mixture-of-experts" for m in ("gptq", "w8a8", "fp8")})
# llm-compressor's SmoothQuant (W8A8) resolves no mappings for some layouts, writes a broken
# artifact for others, and one whose experts do not load back for Qwen3-MoE (w8a8.W8A8_REFUSED).
REFUSED.update({(a, "w8a8"): "Error resolving mappings" for a in ("falcon", "glm4", "gpt_neox", "olmo2", "starcoder2")})
REFUSED.update({(a, "w8a8"): "top token matches" for a in ("gemma2", "gemma3_text", "phi")})
REFUSED[("qwen3_moe", "w8a8")] = "does not load back"
BY_CONFIG = set(METHODS) - {"gguf"}  # refusals that config.json alone decides (supports()); gguf's are check()'s
# make test's slice: one cell per method on Gemma 3 text (one fixture built once serves six; fp8
# ~12 s, gptq ~27 s), W8A8 on Command-R (its quickest, ~17 s; Gemma 3's is refused), two AWQ
# refusals and AWQ through quantkit's own GLM-4 mappings, and a GGUF preflight refusal (< 1 s).
SLICE = [("gemma3_text", m) for m in ("awq", "nf4", "int8", "gguf", "fp8", "gptq")] + [("cohere", "w8a8")]
SLICE += [("qwen3_moe", "awq"), ("glm4", "awq"), ("gpt_neox", "gguf")]
FULL = os.environ.get("QUANTKIT_ARCH_MATRIX") == "full"
# The full matrix: the slice, then the quickest methods first (on a busy 2-core machine, hours).
MATRIX = SLICE + [
    (a, m) for m in ("nf4", "int8", "fp8", "awq", "gptq", "w8a8", "gguf") for a in ARCHITECTURES if (a, m) not in SLICE
]
CELLS = MATRIX if FULL else SLICE
RESULTS: dict[tuple[str, str], dict] = {}


def results_file() -> Path:
    """Every cell's result for these library versions, kept across runs (the full matrix can be
    run in parts: ``make architectures PYTEST_ARGS='-k gguf'``), so the table covers them all."""
    import transformers

    from quantkit.core.library_tables import version_of

    versions = "-".join(
        str(v)
        for v in (
            transformers.__version__,
            version_of("llmcompressor"),
            version_of("bitsandbytes"),
            version_of("llama-cpp-python"),
        )
    )
    return fixture_cache() / f"architecture-matrix-{versions}.json"


def record(arch: str, method: str, result: dict) -> None:
    RESULTS[(arch, method)] = result
    path = results_file()
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored[f"{arch}|{method}"] = result
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stored, indent=1, sort_keys=True))
    tmp.replace(path)


def recorded() -> dict[tuple[str, str], dict]:
    path = results_file()
    stored = json.loads(path.read_text()) if path.is_file() else {}
    return {tuple(key.split("|")): value for key, value in stored.items()}


if os.environ.get("QUANTKIT_ARCH_RESUME"):  # `make architectures QUANTKIT_ARCH_RESUME=1`: only cells not yet passed
    CELLS = [c for c in CELLS if recorded().get(c, {}).get("verdict") not in ("verified", "refused")]
PROBE = "The capital of France is Paris. Water boils at 100 degrees Celsius."


def options(method: str):
    return make_options(method, OPTIONS.get(method, {}))


def refusal(model_dir: Path, method: str) -> str | None:
    """The method's own up-front verdict: ``supports`` from config.json, then ``check`` (no weights)."""
    config = load_config(model_dir)
    impl = get_method(method)
    reason = impl.supports(config)
    if reason:
        return reason
    try:
        impl.check(model_dir, config, options(method))
    except PreflightError as exc:
        return str(exc)
    return None


def reload_transformers(artifact: Path) -> dict:
    """Plain transformers, the way a user loads it: finite logits, and the parameter count quantkit
    reports for it (packed weights counted unpacked)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantkit.engines.hf import count_parameters

    model = AutoModelForCausalLM.from_pretrained(artifact, device_map="cpu")
    ids = AutoTokenizer.from_pretrained(artifact)(PROBE, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=ids).logits.float()
    return {"finite": bool(torch.isfinite(logits).all()), "n_params": count_parameters(model), "positions": ids.shape[1]}


def reload_gguf(artifact: Path) -> dict:
    """llama.cpp in a fresh process (its log noise and crashes stay out of pytest's)."""
    gguf = next(artifact.glob("*.gguf"))
    code = (
        "import json, sys, llama_cpp, numpy\n"
        "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, logits_all=True, n_threads=2, verbose=False)\n"
        "ids = llm.tokenize(sys.argv[2].encode(), add_bos=True)\n"
        "llm.eval(ids)\n"
        "rows = llm.scores[:len(ids)]\n"
        "print(json.dumps({'finite': bool(numpy.isfinite(rows).all()),"
        " 'n_params': llm._model.n_params(), 'positions': len(ids)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(gguf), PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", autouse=True)
def write_table():
    """After the module: docs/architectures.md from this run's cells, when asked for."""
    yield
    target = os.environ.get("QUANTKIT_ARCH_TABLE")
    if target and RESULTS:
        Path(target).write_text(render_table(recorded()))


def render_table(results: dict[tuple[str, str], dict]) -> str:
    import transformers

    from quantkit.core.library_tables import version_of

    archs = [a for a in ARCHITECTURES if any((a, m) in results for m in METHODS)]
    lines = [
        "# Architectures x methods",
        "",
        "Generated by `make architectures` (tests/test_architectures.py with QUANTKIT_ARCH_MATRIX=full): a tiny",
        "random checkpoint of each architecture (`AutoConfig.for_model` + `AutoModelForCausalLM.from_config`,",
        "hidden 128, 2 layers, SmolLM2's tokenizer) through each method (AWQ calibrated on 8 samples of 64",
        "tokens, GPTQ and W8A8 on 4, FP8 data-free, GGUF as Q8_0). **verified**: quantize's own",
        "verification passed and the test reloaded the artifact in its runtime (plain transformers, or",
        "llama.cpp for GGUF Q8_0) with finite logits; **refused**: the method said no up front (from",
        "config.json and the tokenizer files), before any weight was loaded. Nothing else is allowed. Seconds are wall time on a",
        'busy 2-core machine; "not run yet": not run for these versions when the file was written',
        "(`make architectures QUANTKIT_ARCH_RESUME=1` runs only those).",
        "",
        f"transformers {transformers.__version__}, llm-compressor {version_of('llmcompressor')}, "
        f"bitsandbytes {version_of('bitsandbytes')}, llama-cpp-python {version_of('llama-cpp-python')}.",
        "",
        "| architecture | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    notes = []
    for arch in archs:
        row = [f"{ARCHITECTURES[arch][0]} (`{arch}`)"]
        for method in METHODS:
            cell = results.get((arch, method))
            if cell is None:
                row.append("not run yet")
            elif cell["verdict"] == "verified":
                row.append(f"verified ({cell['seconds']:.0f} s){' *' if cell.get('earlier') else ''}")
            else:
                notes.append(cell["reason"])
                row.append(f"{'refused' if cell['verdict'] == 'refused' else '**FAILED**'} [{len(notes)}]")
        lines.append("| " + " | ".join(row) + " |")
    pending = [f"{a} x {m}" for a in archs for m in METHODS if (a, m) not in results]
    if any(cell.get("earlier") for cell in results.values()):
        lines += ["", f"\\* {EARLIER}"]
    if pending:
        lines += ["", f"Pending (not run yet for these versions): {', '.join(pending)}."]
    if notes:
        lines += ["", "Refusals (as quantkit prints them) and failures:", ""]
        lines += [f"{i}. {reason}" for i, reason in enumerate(notes, 1)]
    if any(cell["verdict"] == "failed" for cell in results.values()):
        lines += ["", *FAILED_NOTE.strip().splitlines()]
    return "\n".join(lines) + "\n"


# Cells recorded with "earlier": their result comes from the previous docs/architectures.md for
# the same library versions (the recorded results were lost), not rerun since.
EARLIER = (
    "carried over from the previous table for the same library versions (not rerun with this change; "
    "`make architectures` reruns a cell once its record is removed)."
)
FAILED_NOTE = """
A **FAILED** cell is an open defect: it stopped after the work had started and published nothing;
the method's up-front checks (``supports``/``check``) should have foreseen it, or the method fixed.
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch, method", CELLS, ids=[f"{a}-{m}" for a, m in CELLS])
def test_cell_is_verified_or_refused_up_front(arch, method, tmp_path):
    try:
        run_cell(arch, method, tmp_path)
    except BaseException as exc:  # recorded for the table (a crash is a defect to fix), then failed
        first = (str(exc).strip().splitlines() or [""])[0]
        record(arch, method, {"verdict": "failed", "reason": f"{type(exc).__name__}: {first[:300]}"})
        raise


def run_cell(arch: str, method: str, tmp_path: Path) -> None:
    model_dir = tiny_arch_dir(arch)
    out = tmp_path / f"{arch}-{method}"
    started = time.time()
    reason = refusal(model_dir, method)
    if reason is not None:
        assert (arch, method) in REFUSED, f"{arch} x {method} refused unexpectedly: {reason}"
        assert REFUSED[(arch, method)] in reason and "\n" not in reason
        began = time.time()
        with pytest.raises(PreflightError) as err:  # quantize() itself refuses the same way, before any weight
            quantize(str(model_dir), method, out, options(method))
        assert REFUSED[(arch, method)] in str(err.value)
        assert time.time() - began < 15, "a refusal must come before the work starts"
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}*")), "a refusal left files behind"
        record(arch, method, {"verdict": "refused", "reason": reason})
        return
    assert (arch, method) not in REFUSED, f"{arch} x {method} should be refused up front"
    artifact = quantize(str(model_dir), method, out, options(method))
    manifest = json.loads((artifact / "quantkit.json").read_text())
    assert manifest["verification"], "quantize published an artifact without verifying it"
    reloaded = reload_gguf(artifact) if method == "gguf" else reload_transformers(artifact)
    assert reloaded["finite"] and reloaded["positions"] > 5, reloaded
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:  # packed weights count as the model's
        base = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    # llama.cpp may add or merge a tensor (rope factors): exact for transformers, within 1% for GGUF
    assert abs(reloaded["n_params"] - base) <= (0.01 * base if method == "gguf" else 0), (reloaded["n_params"], base)
    record(arch, method, {"verdict": "verified", "seconds": round(time.time() - started, 1)})


def test_support_verdicts_come_from_config_alone():
    """Every method's verdict for every architecture from a config dict (no folder, no weights):
    the REFUSED cells that config.json decides (MoE AWQ, Mixtral through llm-compressor, Falcon
    bitsandbytes, SmoothQuant's W8A8 refusals) are refused with a fix; the rest are supported."""
    for arch in ARCHITECTURES:
        config = arch_config(arch, pad_token_id=0, bos_token_id=1, eos_token_id=2).to_dict()
        for method in METHODS:
            verdict = get_method(method).supports(config)
            if (arch, method) in REFUSED and method in BY_CONFIG:
                assert verdict and REFUSED[(arch, method)] in verdict and "(use --method " in verdict
            else:
                assert verdict is None, (arch, method, verdict)


def test_awq_refuses_what_its_default_mapping_cannot_resolve():
    """An architecture neither llm-compressor nor quantkit maps, whose modules are not Llama-shaped
    (GPT-2: c_attn/c_fc), is refused from a meta-device model, with the fix."""
    from quantkit.quantization.awq.support import awq_reason

    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": 128,
        "hidden_size": 128,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 1024,
    }
    reason = awq_reason(config)
    assert "default (Llama-shaped)" in reason and "use --method gguf or nf4" in reason, reason


def test_gemma3_text_is_known_to_transformers_by_its_own_table():
    from quantkit.core.preflight import causal_lm_reason, transformers_knows

    assert transformers_knows("gemma3_text")  # it lives in transformers/models/gemma3/
    assert causal_lm_reason({"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text"}) is None


def test_tables_read_without_torch_match_the_libraries():
    """The model-type and AWQ tables quantkit reads from the sources (no torch import) are the
    libraries' own, as importing them gives."""
    code = (
        "import sys\nfrom quantkit.core import library_tables\nfrom quantkit.quantization.awq import support as awq_support\n"
        "library_tables.transformers_tables(); awq_support.llmcompressor_awq_tables()\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from llmcompressor.modifiers.transform.awq.dynamic_mappings import AWQ_DYNAMIC_MAPPING_REGISTRY
    from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from quantkit.core.library_tables import transformers_tables
    from quantkit.quantization.awq.support import llmcompressor_awq_tables

    tables = transformers_tables()
    assert set(tables["config"]) == set(CONFIG_MAPPING_NAMES)
    assert tables["causal_lm"] == {
        k: [v] if isinstance(v, str) else list(v) for k, v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()
    }
    awq = llmcompressor_awq_tables()
    assert awq["registry"] == {
        arch: [[m.smooth_layer, list(m.balance_layers)] for m in mappings] for arch, mappings in AWQ_MAPPING_REGISTRY.items()
    }
    assert set(awq["dynamic"]) == set(AWQ_DYNAMIC_MAPPING_REGISTRY)


def test_converter_architectures_are_the_converters_own_list():
    from quantkit.quantization.gguf.tools import converter_env, find_converter, supported_architectures

    converter = find_converter()
    out = subprocess.run(
        [sys.executable, str(converter.script), "--print-supported-models"],
        capture_output=True,
        text=True,
        env=converter_env(converter),
        timeout=300,
    )
    text = out.stdout + out.stderr
    listed = text.split("TEXT models:", 1)[1].split("MMPROJ models:", 1)[0]
    names = {m.group(1) for m in re.finditer(r"-\s+(\S+)\s*$", listed, re.MULTILINE)}
    assert names and names == supported_architectures(converter)


def test_parameter_estimate_matches_meta_models_of_every_architecture():
    """estimate_params (config.json only) against the real module tree of each architecture at a
    size where layers, not the embedding, dominate (meta device: no memory)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    for arch in ARCHITECTURES:
        sizes = dict(
            hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, head_dim=None, num_key_value_heads=None
        )  # derived, as in real configs (some types ignore them)
        config = arch_config(arch, vocab_size=4096, sizes=sizes, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config)
        actual = sum(p.numel() for p in model.parameters())
        assert abs(estimate_params(config.to_dict()) - actual) / actual < 0.02, arch


def test_gguf_refuses_a_sentencepiece_only_converter_without_tokenizer_model_up_front(tmp_path):
    """Gemma 2's converter reads only tokenizer.model: without one, check() refuses in one line
    before converting (it used to fail inside the converter); Gemma 3's falls back to tokenizer.json."""
    from quantkit.quantization.gguf.tools import find_converter
    from quantkit.quantization.support import sentencepiece_only

    converter = find_converter()
    assert sentencepiece_only(converter, "Gemma2ForCausalLM")
    assert not sentencepiece_only(converter, "Gemma3ForCausalLM") and not sentencepiece_only(converter, "LlamaForCausalLM")
    model_dir = tiny_arch_dir("gemma2")
    with pytest.raises(PreflightError, match="tokenizer.model") as err:
        get_method("gguf").check(model_dir, load_config(model_dir), options("gguf"))
    assert "\n" not in str(err.value)


def test_gguf_config_refusals_spare_the_real_checkpoints_shapes(tmp_path):
    """The GGUF preflight's config refusals fire on the tiny fixtures' shapes and not on the real
    checkpoints' (pythia's rotary_pct, falcon-7b's one KV head, Command-R's tied embeddings,
    phi-2's 4 x hidden feed-forward)."""
    from quantkit.quantization.support import converter_config_reason

    real = {
        "GPTNeoXForCausalLM": {"rotary_pct": 0.25},
        "FalconForCausalLM": {"multi_query": True, "new_decoder_architecture": False},
        "CohereForCausalLM": {"tie_word_embeddings": True},
        "PhiForCausalLM": {"hidden_size": 2560, "intermediate_size": 10240},
    }
    fixture = {
        "GPTNeoXForCausalLM": {"rope_parameters": {"partial_rotary_factor": 0.25}},
        "FalconForCausalLM": {"multi_query": True, "num_kv_heads": 4},
        "CohereForCausalLM": {"tie_word_embeddings": False},
        "PhiForCausalLM": {"hidden_size": 128, "intermediate_size": 256},
    }
    for arch, config in real.items():
        assert converter_config_reason(tmp_path, {"architectures": [arch], **config}) is None, arch
        reason = converter_config_reason(tmp_path, {"architectures": [arch], **fixture[arch]})
        assert reason and "\n" not in reason and "use --method nf4 or int8" in reason, (arch, reason)
