"""Trust, tested: every quantize ends with the artifact loaded in its own runtime, in a fresh
process that never imports quantkit, and compared with its base (quantkit.quantization.verify); a broken one is
never published. And the bench gates really catch a subtly broken 4-bit artifact: one layer's
scales perturbed in an nf4 and in a Q4_K_M artifact fails its own width's gates with exit 3."""

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from quantkit.cli import main
from quantkit.core.errors import VerificationError
from quantkit.quantization import verify_runtime as runtime
from quantkit.quantization.base import MethodResult
from quantkit.quantization.gguf.method import GgufOptions
from quantkit.quantization.quantize import quantize
from quantkit.quantization.verify import SCRIPT, TOP1_MIN, judge, top1_min, verify_artifact

# --- the pieces, fast --------------------------------------------------------------------------


def test_runtime_script_never_imports_quantkit():
    """Neither the script nor any engine's load recipe it runs (EngineEntry.verify.child)."""
    from quantkit.engines import ENGINES

    for path in [SCRIPT, *(entry.verify.child_path() for entry in ENGINES.values())]:
        tree = ast.parse(path.read_text())
        names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert names and not [n for n in names if n.split(".")[0] == "quantkit"], (path, names)


def test_compare_scores_agreement_kl_and_non_finite_logits():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(65, 100)) * 3).astype(np.float32)
    ids = list(rng.integers(0, 100, 65))
    base = runtime.reference(ids, ids, runtime.log_softmax(logits[:-1]))
    assert base["top_idx"].shape == (64, 64) and (base["top_idx"][:, 0] == logits[:-1].argmax(-1)).all()
    same = runtime.compare(base, logits, {})
    assert same["top1"] == 1.0 and same["kld_mean"] < 1e-5 and same["ppl_ratio"] == 1.0 and same["tokens"] == 64
    flat = runtime.compare(base, np.zeros((65, 100)), {})  # a dead model: the same scores everywhere
    assert flat["finite"] and flat["top1"] < 0.1 and flat["kld_mean"] > 1
    padded = runtime.compare(base, np.concatenate([logits, np.full((65, 28), -1e4)], -1), {})
    assert padded["top1"] == 1.0 and padded["kld_mean"] < 1e-5  # a padded vocabulary changes nothing
    broken = logits.copy()
    broken[3, 7] = np.nan
    assert runtime.compare(base, broken, {}) == {"tokens": 64, "finite": False}


def test_parity_names_the_first_difference():
    base = {"text_ids": [1, 2, 3, 4], "ids": [0, 1, 2, 3]}
    assert runtime.parity(base, [1, 2, 3, 4], [0, 1, 2, 3]) == {"tokenizer_parity": True}
    plain = runtime.parity(base, [1, 2, 9, 4], [0, 1, 2, 3])
    assert plain == {"tokenizer_parity": False, "first_difference": 2, "base_ids": [3, 4], "artifact_ids": [9, 4]}
    no_bos = runtime.parity(base, [1, 2, 3, 4], [1, 2, 3, 4])
    assert not no_bos["tokenizer_parity"] and no_bos["first_difference"] == 0


def test_failures_are_one_line_errors():
    row = {
        "tokenizer_parity": True,
        "finite": True,
        "tokens": 255,
        "top1": 0.62,
        "kld_mean": 0.2,
        "ppl_ratio": 1.2,
        "bits": 4,
        "top1_min": top1_min(4),
    }
    assert judge("nf4", row) is None
    failures = [
        judge("nf4", {**row, "top1": 0.01}),
        judge("Q4_K_M", {**row, "finite": False}),
        judge("nf4", {**row, "tokenizer_parity": False, "first_difference": 7, "base_ids": [1], "artifact_ids": [2]}),
    ]
    for error, words in zip(failures, ["top token at only 1% of 255 positions", "NaN or inf", "first difference at token 7"]):
        assert isinstance(error, VerificationError) and words in str(error) and "\n" not in str(error)


def test_top1_floor_rises_with_the_bit_width():
    floors = [top1_min(bits) for bits in (1, 2, 3, 4, 5, 6, 8, 16, 32)]
    assert floors == sorted(floors) and floors[0] == TOP1_MIN[2] and floors[-1] == TOP1_MIN[16]
    assert min(floors) > 100 / 49152  # far above chance for any real vocabulary


# --- through quantize, real runtimes -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_nf4(tiny_llama, tmp_path_factory) -> Path:
    return quantize(tiny_llama, "nf4", tmp_path_factory.mktemp("verify") / "tiny-nf4")


def test_quantize_records_its_verification(tiny_nf4):
    check = json.loads((tiny_nf4 / "quantkit.json").read_text())["verification"]
    assert check["runtime"] == "transformers" and "quantkit not imported" in check["process"]
    assert check["tokenizer_parity"] and check["finite"] and check["tokens"] == 255 and check["bits"] == 4
    # Measured on the tiny random Llama: ~0.65 (SmolLM2: ~0.69), against a floor of 0.4.
    assert check["top1_min"] <= check["top1"] <= 1 and check["kld_mean"] < 0.05 and 0.9 < check["ppl_ratio"] < 1.1
    assert 0 < check["base_s"] < check["seconds"]


def test_a_second_artifact_of_the_same_base_reuses_its_side(tiny_nf4, tiny_llama, tmp_path):
    """The base's ids and top-k log-probs are cached by the first check (here tiny_nf4's), so the
    second loads only the artifact - and gets the same comparison as a fresh base would give."""
    again = json.loads((tiny_nf4 / "quantkit.json").read_text())["verification"]
    result = MethodResult(format="bitsandbytes", engine="transformers", settings={"bits": 4})
    second = verify_artifact(tiny_nf4, tiny_llama, "nf4", result)
    assert second["base_cached"] is True and second["top1"] == again["top1"] and second["kld_mean"] == again["kld_mean"]


def zero_embeddings(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors["model.embed_tokens.weight"].zero_()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_a_broken_artifact_is_not_published(tiny_llama, tmp_path, capsys, monkeypatch):
    """The method writes an artifact that loads but is dead (zeroed embeddings): quantize fails in
    one line, exit 1, and leaves nothing - not the artifact, not its staging folder."""
    from quantkit.quantization.bnb import Nf4Method

    original = Nf4Method.quantize

    def broken(self, model_dir, out_dir, options):
        result = original(self, model_dir, out_dir, options)
        zero_embeddings(out_dir)
        return result

    monkeypatch.setattr(Nf4Method, "quantize", broken)
    with pytest.raises(SystemExit) as exit_:
        main(["quantize", str(tiny_llama), "--method", "nf4", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 1 and len(lines) == 1 and "Traceback" not in err
    assert "verification of nf4: the artifact picks its base's top token at only" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory) -> Path:
    return quantize(tiny_llama, "gguf", tmp_path_factory.mktemp("verify") / "tiny-gguf", GgufOptions(gguf_types=["Q8_0"]))


@pytest.mark.slow
def test_gguf_verified_in_llama_cpp_and_a_zeroed_file_fails(tiny_gguf, tiny_llama, tmp_path):
    from gguf import GGUFReader

    manifest = json.loads((tiny_gguf / "quantkit.json").read_text())
    check = manifest["verification"]
    assert check["runtime"] == "llama.cpp" and list(check["files"]) == ["Q8_0"]
    row = check["files"]["Q8_0"]
    assert row["file"] == manifest["gguf_files"]["Q8_0"]["file"] and row["tokenizer_parity"] and row["finite"]
    assert row["bits"] == 8 and row["top1"] >= row["top1_min"] and row["kld_mean"] < 0.05

    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tiny_gguf / row["file"], broken / row["file"])
    reader = GGUFReader(broken / row["file"], "r+")
    next(t for t in reader.tensors if t.name == "token_embd.weight").data[...] = 0
    reader.data.flush()
    del reader
    result = MethodResult(
        format="gguf",
        engine="llama.cpp",
        settings={"gguf_types": ["Q8_0"]},
        extra={"gguf_files": {"Q8_0": {"file": row["file"]}}},
    )
    with pytest.raises(VerificationError, match="verification of Q8_0: the artifact picks its base's top token"):
        verify_artifact(broken, tiny_llama, "gguf", result)


# --- the bench gates catch a subtly broken 4-bit artifact (exit 3) ------------------------------


def bench(artifact: Path, base: Path, out: Path) -> dict:
    """`quantkit bench` (quality only, small) through the real CLI; returns (exit code, JSON)."""
    code = 0
    try:
        main(
            [
                "bench",
                str(artifact),
                "--base",
                str(base),
                "--no-smoke",
                "-p",
                "16",
                "-n",
                "4",
                "--repetitions",
                "1",
                "--warmup",
                "0",
                "--threads",
                "2",
                "--eval-tokens",
                "256",
                "--json",
                str(out),
            ]
        )
    except SystemExit as exc:
        code = exc.code
    return {"exit": code, **json.loads(out.read_text())}


def assert_caught(intact: dict, perturbed: dict) -> None:
    # --no-smoke: the intact artifact passes every gate it ran, and is unvalidated (not failed) for the skipped smoke
    assert intact["exit"] == 0 and not intact["failures"] and intact["verdict"] == "unvalidated" and intact["bits"] == 4
    assert perturbed["exit"] == 3 and perturbed["verdict"] == "failed" and not perturbed["passed"] and perturbed["bits"] == 4
    assert perturbed["quality"]["tokenizer_parity"] and perturbed["quality"]["kld_mean"] > 2 * intact["quality"]["kld_mean"]
    assert any(f.startswith("quality: kld_mean") for f in perturbed["failures"]), perturbed["failures"]


@pytest.mark.slow
def test_nf4_with_one_layers_scales_perturbed_fails_the_4bit_gates(smollm2, tmp_path):
    """Layer 0's down projection, its (double-quantized) absmax scales times 3: the file loads and
    runs, the gates fail (measured KL 1.37 vs 0.20 intact, top-1 35 % vs 69 %)."""
    from safetensors.torch import load_file, save_file

    artifact = quantize(smollm2, "nf4", tmp_path / "nf4")
    perturbed = tmp_path / "nf4-perturbed"
    shutil.copytree(artifact, perturbed)
    tensors = load_file(artifact / "model.safetensors")
    key = "model.layers.0.mlp.down_proj.weight.nested_absmax"
    tensors[key] = tensors[key] * 3
    save_file(tensors, perturbed / "model.safetensors", metadata={"format": "pt"})
    assert_caught(bench(artifact, smollm2, tmp_path / "intact.json"), bench(perturbed, smollm2, tmp_path / "bad.json"))


@pytest.mark.slow
def test_q4_k_m_with_one_tensors_scales_perturbed_fails_the_4bit_gates(smollm2, tmp_path):
    """A Q4_K_M file (requantized from the bundled GGUF by llama.cpp) with the super-block scales
    ``d`` of one Q4_K tensor times 3, patched in place: measured KL 1.89 vs 0.05, top-1 31 % vs 83 %."""
    import ctypes

    import llama_cpp
    from gguf import GGUFReader

    from quantkit.hub.bundled import bundled_gguf

    intact = tmp_path / "SmolLM2-135M-Instruct-Q4_K_M.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, True, 2
    src = bundled_gguf("bundled:smollm2-135m-instruct")
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(intact).encode(), ctypes.byref(params)) == 0
    perturbed = tmp_path / "bad" / intact.name
    perturbed.parent.mkdir()
    shutil.copy(intact, perturbed)
    reader = GGUFReader(perturbed, "r+")
    tensor = next(t for t in reader.tensors if t.tensor_type.name == "Q4_K")
    blocks = tensor.data.reshape(-1, 144)  # block_q4_K: fp16 d, fp16 dmin, 12 bytes of scales, 128 of quants
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    blocks[:, 0:2] = (d * 3).astype(np.float16).view(np.uint8)
    reader.data.flush()
    del reader
    assert perturbed.read_bytes() != intact.read_bytes()
    assert_caught(bench(intact, smollm2, tmp_path / "intact.json"), bench(perturbed, smollm2, tmp_path / "bad.json"))
