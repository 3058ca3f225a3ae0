"""GGUF export through llama.cpp's own converter and quantizer: real models, real llama.cpp.

The artifacts are built once per module; each is then loaded by plain llama-cpp-python in a fresh
interpreter that never imports quantkit, as a user would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantkit.core.errors import InputError, PreflightError, QuantizeError
from quantkit.quantization.gguf.method import GgufOptions
from quantkit.quantization.quantize import quantize
from quantkit.quantization.registry import make_options

TYPES = ["Q8_0", "Q4_K_M"]

# Runs without quantkit: llama-cpp-python loads each file and chats through the embedded template.
PLAIN_LLAMA_CPP = r"""
import json, sys
import llama_cpp
from gguf import GGUFReader
out = {}
for path in sys.argv[1:]:
    llm = llama_cpp.Llama(model_path=path, n_ctx=512, n_threads=2, seed=0, verbose=False)
    reply = llm.create_chat_completion(messages=[{"role": "user", "content": "What is the capital of France?"}],
                                       max_tokens=48, temperature=0.0)["choices"][0]
    llm.close()
    fields = GGUFReader(path).fields
    out[path] = {"reply": reply["message"]["content"], "finish": reply["finish_reason"],
                 "template": fields["tokenizer.chat_template"].contents(),
                 "eos": fields["tokenizer.ggml.eos_token_id"].contents()}
out["quantkit_imported"] = any(m.startswith("quantkit") for m in sys.modules)
print(json.dumps(out))
"""


def plain_llama_cpp(files: list[Path]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_LLAMA_CPP, *map(str, files)], capture_output=True, text=True, cwd="/", env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def quantkit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantkit", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smollm2_gguf(smollm2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "smollm2-gguf"
    # A small calibration keeps llama-imatrix to a few chunks (the default 64 x 256 is ~74 of them).
    return quantize(str(smollm2), "gguf", out, GgufOptions(gguf_types=TYPES, ollama=True, calib_samples=8, calib_seq_len=128))


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "tiny-gguf"
    proc = quantkit_cli(
        "quantize",
        str(tiny_llama),
        "--method",
        "gguf",
        "--gguf-type",
        "q8_0",
        "--gguf-type",
        "Q4_K_M",
        "--calib-samples",
        "8",
        "--calib-seq-len",
        "128",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "INFO:hf-to-gguf" in proc.stderr  # the converter's progress was streamed
    return out


def check_artifact(folder: Path, stem: str, source: Path) -> dict:
    """What every GGUF artifact must hold; returns its manifest."""
    from transformers import AutoTokenizer

    manifest = json.loads((folder / "quantkit.json").read_text())
    assert manifest["method"] == "gguf" and manifest["format"] == "gguf" and manifest["engine"] == "llama.cpp"
    assert manifest["settings"]["gguf_types"] == TYPES
    # Default: the importance matrix for 4 bits and below, from the calibration set; one commit.
    assert manifest["settings"]["imatrix"] == "auto" and manifest["settings"]["imatrix_types"] == ["Q4_K_M"]
    assert manifest["imatrix"]["chunks"] >= 2 and manifest["imatrix"]["calibration"]["samples"] > 0
    assert manifest["calibration"] == manifest["imatrix"]["calibration"]
    lcpp = manifest["llama_cpp"]
    assert len(lcpp["commit"]) == 40 and lcpp["commit"] == lcpp["runtime_commit"] == lcpp["tools_commit"]
    assert lcpp["one_commit"] is True
    names = sorted(p.name for p in folder.iterdir())
    assert [n for n in names if n.endswith(".gguf")] == sorted(f"{stem}-{t}.gguf" for t in TYPES)
    assert not [n for n in names if n.startswith(".")], names  # no scratch F16 or work folder left
    assert not list(folder.parent.glob(f".{folder.name}.partial-*"))
    assert manifest["gguf_file"] == f"{stem}-Q8_0.gguf"
    files = manifest["gguf_files"]
    for gguf_type in TYPES:
        record = files[gguf_type]
        assert record["size_bytes"] == (folder / record["file"]).stat().st_size
        assert manifest["checks"][gguf_type]["token_parity"]["identical"] is True
        assert manifest["checks"][gguf_type]["metadata"]["end_of_turn"] == "<|im_end|>"
        assert "<|im_end|>" in manifest["checks"][gguf_type]["metadata"]["stop_tokens"]
    assert 8.0 < files["Q8_0"]["bits_per_weight"] < 10.0  # 8.5 plus the vocabulary in the file
    assert files["Q4_K_M"]["bits_per_weight"] < files["Q8_0"]["bits_per_weight"]
    assert files["Q8_0"]["n_fallback"] == 0
    fallbacks = files["Q4_K_M"]["fallback_tensors"]
    assert fallbacks and files["Q4_K_M"]["n_fallback"] == len(fallbacks)
    for row in fallbacks:  # llama.cpp's log and the file itself agree
        assert row["cols"] % 256 != 0 and row["in_file"] == row["used"] != row["required"]
    card = (folder / "README.md").read_text()
    for word in ("imatrix_types", "llama-cli", "llama-server", "llama_cpp import Llama", "ollama create", "library_name: gguf"):
        assert word in card

    plain = plain_llama_cpp([folder / files[t]["file"] for t in TYPES])
    assert plain.pop("quantkit_imported") is False
    template = AutoTokenizer.from_pretrained(source).chat_template
    for result in plain.values():
        assert result["template"] == template and result["reply"].strip()
    manifest["plain"] = {t: plain[str(folder / files[t]["file"])] for t in TYPES}
    return manifest


@pytest.mark.slow
def test_smollm2_q8_and_q4_chat_in_plain_llama_cpp(smollm2_gguf, smollm2):
    manifest = check_artifact(smollm2_gguf, "SmolLM2-135M-Instruct", smollm2)
    assert "Paris" in manifest["plain"]["Q8_0"]["reply"]
    assert manifest["plain"]["Q8_0"]["finish"] == "stop"
    smoke = manifest["checks"]["Q8_0"]["smoke_chat"]
    assert "Paris" in smoke["reply"] and smoke["stopped_by_itself"] is True
    # SmolLM2's widths (576) are not multiples of 256: most tensors fall back at Q4_K_M.
    assert manifest["gguf_files"]["Q4_K_M"]["n_fallback"] > 100
    assert (smollm2_gguf / "Modelfile").read_text().startswith("# Written by quantkit")
    assert "FROM ./SmolLM2-135M-Instruct-Q8_0.gguf" in (smollm2_gguf / "Modelfile").read_text()
    assert "FROM ./SmolLM2-135M-Instruct-Q4_K_M.gguf" in (smollm2_gguf / "Modelfile.Q4_K_M").read_text()


@pytest.mark.slow
def test_tiny_llama_through_the_cli(tiny_gguf, tiny_llama):
    manifest = check_artifact(tiny_gguf, "tiny-llama", tiny_llama)
    assert manifest["converter_args"]["F16"][:4] == ["convert_hf_to_gguf.py", "MODEL_DIR", "--outfile", "tiny-llama-F16.gguf"]
    assert not (tiny_gguf / "Modelfile").exists()  # only with --ollama


@pytest.mark.slow
def test_token_parity_names_the_first_differing_string(tiny_gguf, fresh_bpe_model):
    from quantkit.quantization.gguf.checks import hf_tokenizer, token_parity

    with pytest.raises(QuantizeError, match="token parity failed .* on 'Hello world'"):
        token_parity(tiny_gguf / "tiny-llama-Q8_0.gguf", hf_tokenizer(fresh_bpe_model))


def model_copy(source: Path, dest: Path, **config_changes) -> Path:
    """A model folder sharing ``source``'s files, with config.json changed."""
    dest.mkdir()
    for entry in source.iterdir():
        if entry.name != "config.json":
            (dest / entry.name).symlink_to(entry)
    config = json.loads((source / "config.json").read_text())
    config.update(config_changes)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


@pytest.fixture
def fresh_bpe_model(tiny_llama, tmp_path) -> Path:
    """tiny_llama with a ByteLevel BPE tokenizer freshly trained by `tokenizers` (no known hash)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path / "fresh-bpe"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        (folder / name).symlink_to(tiny_llama / name)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog " * 4, "hello world, 12345 tokens", "def f(x): return x"]
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder


def assert_one_line_failure(proc: subprocess.CompletedProcess, out: Path, *words: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    for word in words:
        assert word in lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_architecture_the_converter_lacks_fails_in_one_line(tiny_llama, tmp_path):
    model = model_copy(tiny_llama, tmp_path / "odd", architectures=["NoSuchModelForCausalLM"])
    out = tmp_path / "out"
    proc = quantkit_cli("quantize", str(model), "--method", "gguf", "--gguf-type", "Q8_0", "-o", str(out))
    assert_one_line_failure(proc, out, "does not support architecture NoSuchModelForCausalLM")


def test_unrecognized_pre_tokenizer_fails_in_one_line(fresh_bpe_model, tmp_path):
    out = tmp_path / "out"
    proc = quantkit_cli("quantize", str(fresh_bpe_model), "--method", "gguf", "-o", str(out))
    assert_one_line_failure(proc, out, "pre-tokenizer was not recognized")


def test_converter_failures_keep_their_key_line():
    from quantkit.quantization.gguf.tools import converter_error, key_line

    trace = [
        "INFO:hf-to-gguf:Loading model: x",
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        "NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()",
        "WARNING:hf-to-gguf:** chkhsh:  " + "ab" * 32,
    ]
    assert key_line("\n".join(trace)).startswith("NotImplementedError: BPE pre-tokenizer")
    error = converter_error(trace)
    assert isinstance(error, PreflightError) and "abababab" in str(error) and "\n" not in str(error)
    error = converter_error(["INFO:x", "ERROR:hf-to-gguf:Model FooForCausalLM is not supported"])
    assert isinstance(error, PreflightError) and "Model FooForCausalLM is not supported" in str(error)
    error = converter_error(["RuntimeError: out of disk"])
    assert isinstance(error, QuantizeError) and "out of disk" in str(error)


def test_converter_comes_from_the_installed_version_or_a_checkout(tmp_path, monkeypatch):
    from importlib import metadata

    from quantkit.quantization.gguf.tools import find_converter, supported_architectures

    vendored = find_converter()
    assert vendored.script.is_file() and (vendored.root / "gguf-py" / "gguf").is_dir()
    assert metadata.version("llama-cpp-python") in vendored.origin and len(vendored.commit) == 40
    assert {"LlamaForCausalLM", "Qwen2ForCausalLM"} <= supported_architectures(vendored)
    monkeypatch.setenv("LLAMA_CPP_DIR", str(vendored.root))
    assert find_converter().root == vendored.root
    with pytest.raises(InputError, match="no convert_hf_to_gguf.py"):
        find_converter(tmp_path)


def test_converter_view_turns_off_byte_fallback_only_for_byte_level_bpe(tiny_llama, tmp_path):
    """A checkpoint that transformers rebuilt from a GGUF has byte_fallback on a ByteLevel BPE."""
    from quantkit.quantization.gguf.tools import converter_view

    tokenizer = json.loads((tiny_llama / "tokenizer.json").read_text())
    born = tmp_path / "gguf-born"
    born.mkdir()
    (born / "model.safetensors").symlink_to(tiny_llama / "model.safetensors")
    (born / "tokenizer.json").write_text(json.dumps({**tokenizer, "model": {**tokenizer["model"], "byte_fallback": True}}))
    view, fixes = converter_view(born, tmp_path / "scratch1")
    assert fixes and json.loads((view / "tokenizer.json").read_text())["model"]["byte_fallback"] is False
    assert (view / "model.safetensors").resolve() == (tiny_llama / "model.safetensors").resolve()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "tokenizer.json").write_text(json.dumps({**tokenizer, "model": {**tokenizer["model"], "byte_fallback": False}}))
    assert converter_view(plain, tmp_path / "scratch2") == (plain, [])


def test_unknown_gguf_type_is_an_input_error(tiny_llama):
    assert GgufOptions().gguf_types == ["Q4_K_M"]
    assert GgufOptions(gguf_types=["q8_0", "Q8_0", "F16"]).gguf_types == ["Q8_0", "F16"]
    with pytest.raises(InputError, match="gguf_types 'Q1_X' is not one of"):
        make_options("gguf", {"gguf_types": ["Q1_X"]})


def test_help_lists_gguf_types():
    proc = quantkit_cli("quantize", "--help")
    assert proc.returncode == 0 and "Q4_K_M" in proc.stdout and "--llama-cpp-dir" in proc.stdout


def test_help_lists_iq_types_and_the_imatrix_switch():
    proc = quantkit_cli("quantize", "--help")
    assert proc.returncode == 0 and "iq4_xs" in proc.stdout.lower() and "iq2_xxs" in proc.stdout.lower()
    assert "--imatrix / --no-imatrix" in proc.stdout


def test_imatrix_defaults_by_width_and_types_that_need_one_refuse_no_imatrix():
    from quantkit.quantization.gguf.method import imatrix_types

    assert imatrix_types(["F16", "Q8_0", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M"], None) == ["Q4_K_M", "IQ4_XS", "Q3_K_M"]
    assert imatrix_types(["Q8_0", "Q4_K_M"], True) == ["Q8_0", "Q4_K_M"]
    assert imatrix_types(["Q8_0", "Q4_K_M"], False) == []
    with pytest.raises(InputError, match="cannot make IQ2_XXS, Q2_K_S without an importance matrix"):
        imatrix_types(["Q4_K_M", "IQ2_XXS", "Q2_K_S"], False)


def test_no_imatrix_with_an_iq2_type_fails_in_one_line_before_converting(tiny_llama, tmp_path):
    out = tmp_path / "out"
    proc = quantkit_cli("quantize", str(tiny_llama), "--method", "gguf", "--gguf-type", "IQ2_XXS", "--no-imatrix", "-o", str(out))
    assert_one_line_failure(proc, out, "IQ2_XXS without an importance matrix")
    assert "hf-to-gguf" not in proc.stderr  # refused up front


@pytest.mark.slow
def test_iq_types_with_the_importance_matrix_of_a_given_calibration_file(tiny_llama, tmp_path):
    """IQ2_XXS needs the imatrix (llama.cpp refuses it otherwise); the 128-wide tensors of the tiny
    model fall back to IQ4_NL, the 256-wide ffn_down ones take IQ2_XXS. --calib feeds llama-imatrix."""
    from gguf import GGUFReader

    calib = tmp_path / "calib.jsonl"
    lines = [
        {"text": f"Paragraph {i}: the quick brown fox jumps over the lazy dog, again and again, {i} times."} for i in range(40)
    ] + [{"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello there."}]}]
    calib.write_text("\n".join(json.dumps(x) for x in lines))
    out = quantize(
        str(tiny_llama),
        "gguf",
        tmp_path / "iq",
        GgufOptions(gguf_types=["IQ4_XS", "IQ2_XXS"], calib=calib, calib_samples=8, calib_seq_len=64),
    )
    manifest = json.loads((out / "quantkit.json").read_text())
    assert manifest["settings"]["imatrix_types"] == ["IQ4_XS", "IQ2_XXS"]
    assert manifest["calibration"]["source"] == str(calib) and manifest["calibration"]["chat_samples"] == 1
    assert manifest["imatrix"]["ctx"] <= 64 and manifest["imatrix"]["chunks"] >= 2
    kinds = {t.name: t.tensor_type.name for t in GGUFReader(out / "tiny-llama-IQ2_XXS.gguf").tensors}
    assert kinds["blk.0.ffn_down.weight"] == "IQ2_XXS" and kinds["blk.0.attn_q.weight"] == "IQ4_NL"
    fallbacks = manifest["gguf_files"]["IQ2_XXS"]["fallback_tensors"]
    assert "IQ4_NL" in {r["used"] for r in fallbacks} and all(r["cols"] == 128 for r in fallbacks)


@pytest.mark.slow
def test_kld_agrees_with_llama_perplexity(smollm2_gguf, tmp_path):
    """quantkit's KLD of Q4_K_M against Q8_0 (both llama.cpp) and llama-perplexity's
    --kl-divergence on the same tokens and chunks: SmolLM2 adds no BOS, so the ids are the same."""
    import re

    from quantkit.benchmark.quality import QualityOptions, eval_text, evaluate
    from quantkit.engines import EngineOptions, load_engine
    from quantkit.quantization.gguf.binaries import run_tool

    base, other = (smollm2_gguf / f"SmolLM2-135M-Instruct-{t}.gguf" for t in ("Q8_0", "Q4_K_M"))
    text = tmp_path / "eval.txt"
    text.write_text(eval_text(QualityOptions()))
    options = QualityOptions(max_tokens=4 * 256, ctx=256, text=text)
    # llama-cpp-python (quantkit's engine) runs without flash attention; llama-perplexity's "auto"
    # turns it on for the CPU, and its slightly different sums flip near-tied top tokens.
    common = [
        "-f",
        text,
        "-c",
        256,
        "-b",
        256,
        "--chunks",
        4,
        "-t",
        2,
        "-fa",
        "off",
        "--kl-divergence-base",
        tmp_path / "base.kld",
    ]
    run_tool("llama-perplexity", ["-m", base, *common], echo=False)
    output = run_tool("llama-perplexity", ["-m", other, *common, "--kl-divergence"], echo=False)
    theirs = float(re.search(r"Mean\s+KLD:\s+([0-9.]+)", output).group(1))
    same_top = float(re.search(r"Same top p:\s+([0-9.]+)", output).group(1)) / 100
    engine = load_engine(other, EngineOptions(threads=2))
    try:
        ours = evaluate(engine, base, options, EngineOptions(threads=2))
    finally:
        engine.close()
    assert ours.tokens_scored == 4 * 127
    assert abs(ours.kld_mean / theirs - 1) < 0.02, (ours.kld_mean, theirs)
    assert abs(ours.top1_agreement - same_top) < 0.01, (ours.top1_agreement, same_top)
    p99 = float(re.search(r"99\.0%\s+KLD:\s+([0-9.]+)", output).group(1))
    assert abs(ours.kld_p99 / p99 - 1) < 0.05
