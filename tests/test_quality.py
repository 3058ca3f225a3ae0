"""Quality against the base: the KL arithmetic, the GGUF-vs-HF comparison across engines, the
base-logits cache, and broken artifacts (a zeroed linear layer, a swapped tokenizer) failing the
gates, through the library and the CLI (exit code 3)."""

import numpy as np
import pytest
from models import linked_copy

from quantkit.benchmark.gates import check, gates_for
from quantkit.benchmark.quality import QualityOptions, compress_logprobs, evaluate, kld_full, log_softmax
from quantkit.cli import main
from quantkit.core.weights import artifact_bits
from quantkit.engines import EngineOptions, load_engine
from quantkit.hub.bundled import bundled_gguf

SMALL = QualityOptions(max_tokens=256, ctx=256)  # one chunk, 127 scored positions
ENGINE = EngineOptions(threads=1)


@pytest.fixture(scope="module")
def zeroed_layer(smollm2, tmp_path_factory):
    """SmolLM2 with one linear layer's weights zeroed (the first MLP's down projection)."""
    from safetensors.torch import load_file, save_file

    dst = linked_copy(smollm2, tmp_path_factory.mktemp("broken") / "zeroed", skip=("model.safetensors",))
    tensors = load_file(smollm2 / "model.safetensors")
    tensors["model.layers.0.mlp.down_proj.weight"].zero_()
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def swapped_tokenizer(smollm2, tmp_path_factory):
    """SmolLM2 whose tokenizer.json is another model's (a small BPE trained here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from quantkit.benchmark.quality import eval_text

    dst = linked_copy(smollm2, tmp_path_factory.mktemp("broken") / "swapped", skip=("tokenizer.json",))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([eval_text(QualityOptions())], trainer)
    tok.save(str(dst / "tokenizer.json"))
    return dst


def test_stored_base_gives_the_exact_full_vocabulary_kl():
    """llama-perplexity's uint16 storage of the base rows loses < 0.1 % of the exact KL, for peaked
    and flat distributions, and a smaller artifact vocabulary still compares."""
    rng = np.random.default_rng(0)
    for spread in (1.0, 3.0, 8.0):
        logits = rng.normal(size=(32, 3000)).astype(np.float32) * spread
        p, q = log_softmax(logits), log_softmax(logits + rng.normal(size=logits.shape).astype(np.float32) * 0.2)
        exact = (np.exp(p.astype(np.float64)) * (p - q)).sum(-1)
        ours = kld_full(*compress_logprobs(p), q)
        assert abs(ours.mean() / exact.mean() - 1) < 1e-3 and np.abs(ours - exact).max() < 1e-3
        assert kld_full(*compress_logprobs(p), p).mean() < 1e-3 * exact.mean()  # the storage floor
    codes, scale, offset = compress_logprobs(p)
    assert codes.dtype == np.uint16 and (codes.max(-1) == 65535).all()
    assert (kld_full(codes, scale, offset, q[:, :2000]) > exact).all()  # its missing tokens: ~0 probability


@pytest.mark.slow
def test_gguf_against_its_hf_base_across_engines(smollm2):
    engine = load_engine(bundled_gguf("bundled:smollm2-135m-instruct"), ENGINE)
    try:
        first = evaluate(engine, smollm2, SMALL, ENGINE)
        again = evaluate(engine, smollm2, SMALL, ENGINE)
    finally:
        engine.close()
    assert first.tokenizer_parity and first.tokens_scored == 127 and not first.failures
    # The same Q4_1 weights, dequantized for transformers: differences are llama.cpp's arithmetic.
    assert 0 < first.kld_mean < 0.02 and first.top1_agreement > 0.9 and 0.97 < first.ppl_ratio < 1.05
    assert 1 < first.base_ppl < 100 and 0 < first.rms_dp < 0.05
    stats = [first.kld_median, first.kld_p90, first.kld_p95, first.kld_p99, first.kld_p999, first.kld_max]
    assert stats == sorted(stats) and first.kld_max > first.kld_mean  # llama-perplexity's statistics
    assert again.base_cached and again.kld_mean == first.kld_mean  # base logits came from the cache
    assert check(gates_for(4), None, first.to_dict()) == []


def evaluate_folder(folder, base):
    """Quality of ``folder`` against ``base`` on the small evaluation, engine closed after."""
    engine = load_engine(folder, ENGINE)
    try:
        return evaluate(engine, base, SMALL, ENGINE)
    finally:
        engine.close()


@pytest.mark.slow
def test_zeroed_layer_fails_the_quality_gate(smollm2, zeroed_layer):
    result = evaluate_folder(zeroed_layer, smollm2)
    assert result.tokenizer_parity and result.kld_mean > 1 and result.top1_agreement < 0.5
    failures = check(gates_for(16), None, result.to_dict())
    assert any("kld_mean" in f for f in failures) and any("top1_agreement" in f for f in failures)


def test_swapped_tokenizer_fails_parity(smollm2, swapped_tokenizer):
    result = evaluate_folder(swapped_tokenizer, smollm2)
    assert not result.tokenizer_parity and result.kld_mean is None
    assert any("tokenizer" in f for f in check(gates_for(16), None, result.to_dict()))


@pytest.mark.slow
def test_cli_exits_3_on_a_broken_artifact(smollm2, zeroed_layer, tmp_path, capsys):
    out = tmp_path / "zeroed.json"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "bench",
                str(zeroed_layer),
                "--base",
                str(smollm2),
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
                "1",
                "--eval-tokens",
                "256",
                "--json",
                str(out),
            ]
        )
    assert exit_.value.code == 3
    assert "gate(s) failed" in capsys.readouterr().err
    import json

    data = json.loads(out.read_text())
    assert data["passed"] is False and data["quality"]["kld_mean"] > 1 and data["bits"] == 16


def test_bits_and_gate_overrides():
    assert artifact_bits({"method": "gguf", "settings": {"gguf_types": ["Q4_K_M"]}}) == 4
    assert artifact_bits(None, "SmolLM2-Q8_0.gguf") == 8
    assert artifact_bits({"method": "nf4", "settings": {"bits": 4}}) == 4  # every method records its bits
    assert artifact_bits({"method": "awq", "settings": {"bits": 4}}) == 4
    assert artifact_bits(None, "model", bits_per_weight=16.0) == 16
    assert gates_for(5).kld_mean_max == gates_for(5, {"kld_mean_max": None}).kld_mean_max
    assert gates_for(4, {"top1_min": 0.5}).top1_min == 0.5
    assert gates_for(8).kld_mean_max < gates_for(4).kld_mean_max < gates_for(2).kld_mean_max
    with pytest.raises(Exception, match="unknown gate"):
        gates_for(4, {"kld_max": 1})
