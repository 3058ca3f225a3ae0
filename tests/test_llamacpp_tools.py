"""llama.cpp's compiled tools (built by `make tools` from the llama-cpp-python sdist): found through
one function, of the runtime's llama.cpp commit, a one-line DependencyError when missing; the
quantizer's fallback log parsed; and the decode bytes behind the achieved-bandwidth figure."""

import subprocess

import pytest

from quantkit.core.errors import DependencyError
from quantkit.quantization.gguf.binaries import FALLBACK_LINE, TOOLS, tool, tools_bin, tools_record
from quantkit.quantization.gguf.tools import runtime_commit


def test_the_tools_run_and_share_the_runtime_commit():
    for name in TOOLS:
        path = tool(name)
        assert path.is_file() and path.stat().st_mode & 0o111, path
    proc = subprocess.run([str(tool("llama-quantize")), "--help"], capture_output=True, text=True, timeout=60)
    assert "IQ2_XXS" in proc.stdout + proc.stderr and "--imatrix" in proc.stdout + proc.stderr
    record = tools_record()
    assert len(record["tools_commit"]) == 40 and record["tools_commit"] == runtime_commit()
    with pytest.raises(ValueError):
        tool("llama-chat")  # not one of the tools


def test_missing_tools_name_the_make_command(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LLAMA_CPP_TOOLS", raising=False)
    with pytest.raises(DependencyError, match="are not built") as error:
        tools_bin()
    assert "make tools" in error.value.hint
    monkeypatch.setenv("LLAMA_CPP_TOOLS", str(tmp_path))
    with pytest.raises(DependencyError, match="has no llama-quantize"):
        tool("llama-imatrix")


def test_fallback_lines_of_llama_quantize_are_parsed():
    log = (
        "warning: blk.0.attn_q.weight                     - ncols    576 not divisible by 256 (required for type    q4_K) "
        "-> falling back to    q5_0\n"
        "warning: blk.0.ffn_odd.weight                    - ncols     50 not divisible by 256 (required for type   iq2_xxs) "
        "(WARNING: must use F16 due to unusual shape) -> falling back to     f16\n"
    )
    rows = [(m[1], int(m[2]), m[4], m[5]) for m in FALLBACK_LINE.finditer(log)]
    assert rows == [("blk.0.attn_q.weight", 576, "q4_K", "q5_0"), ("blk.0.ffn_odd.weight", 50, "iq2_xxs", "f16")]


@pytest.mark.parametrize("tied", [True, False])
def test_decode_bytes_count_one_row_of_an_untied_input_embedding(tied):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from quantkit.engines.weights_read import torch_decode_bytes

    config = LlamaConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    table = 1000 * 64 * 4
    every = len({p.data_ptr() for p in model.parameters()})
    stored = sum(p.numel() * 4 for p in {p.data_ptr(): p for p in model.parameters()}.values())
    stored += sum(b.numel() * b.element_size() for b in model.buffers())
    read = torch_decode_bytes(model)
    assert read["tied"] is tied and read["embedding_bytes"] == table and every >= 5
    assert read["bytes"] == (stored if tied else stored - table + 64 * 4)


def test_decode_bytes_of_a_tied_gguf_are_its_tensors():
    from gguf import GGUFReader

    from quantkit.engines.weights_read import gguf_decode_bytes
    from quantkit.hub.bundled import bundled_gguf

    path = bundled_gguf("bundled:smollm2-135m-instruct")
    read = gguf_decode_bytes(path)
    assert read["tied"] is True  # SmolLM2 has no output.weight: token_embd is the output projection
    assert read["bytes"] == sum(int(t.n_bytes) for t in GGUFReader(path).tensors) < path.stat().st_size
