"""The fault matrix: every registered method (each format it declares, and for GGUF a K-quant and
an IQ type) x every fault - a zeroed or scaled decoder layer in the quantized weights, scales or
zero-points perturbed, another model's tokenizer, a wrong chat template, a truncated weight file
- is refused by the verification that ends every quantize, with the failing statistic named.

One tiny artifact per method and format is built (tiny random Llama, small calibration), copied
per fault, broken in place (tests/faults.py) and handed to ``verify_artifact`` as ``quantize``
hands it its staging folder. A fault a format cannot carry is a case whose id says why and
which asserts it (the tensors are absent), never a skip."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import faults
import pytest

from quantkit.core.errors import VerificationError
from quantkit.quantization.base import MethodResult
from quantkit.quantization.registry import METHODS, get_method, make_options
from quantkit.quantization.verify import verify_artifact

FEW = dict(calib_samples=8, calib_seq_len=64)
# The tiny artifact's settings per method (group 64: GPTQ's default 128 would be one group per row).
TINY_SETTINGS = {"awq": FEW, "gptq": dict(FEW, group_size=64), "w8a8": FEW, "fp8": {}, "nf4": {}, "int8": {}, "gguf": FEW}
GGUF_TYPES = ("Q4_K_M", "IQ4_XS")  # a K-quant, and an IQ type (quantkit makes its importance matrix)
FAULTS = (
    "layer-zeroed",
    "layer-scaled",
    "scales-perturbed",
    "zero-points-perturbed",
    "tokenizer-swapped",
    "chat-template-wrong",
    "truncated",
)
# Faults a format cannot carry, and why: the case asserts the format has no such tensors.
NOT_INJECTABLE = {
    ("gptq", "zero-points-perturbed"): "GPTQ W4A16 is symmetric, no zero-points",
    ("w8a8", "zero-points-perturbed"): "W8A8 int8 weights are symmetric, no zero-points",
    ("fp8", "zero-points-perturbed"): "FP8_DYNAMIC has no zero-points",
    ("nf4", "zero-points-perturbed"): "NF4 blocks have absmax scales only, no zero-points",
    ("int8", "zero-points-perturbed"): "LLM.int8 rows have SCB scales only, no zero-points",
    ("gguf-IQ4_XS", "zero-points-perturbed"): "IQ4_XS blocks have a scale and no minimum",
}
# What each fault must be refused for (a statistic of verify.judge, or the runtime's refusal).
CAUGHT_BY = {
    "weights": ("picks its base's top token at only", "logits contain NaN or inf"),
    "tokenizer-swapped": ("tokenizer reads text differently",),
    "chat-template-wrong": ("chat template differs from its base's",),
    "truncated": ("could not load or run the artifact",),
}


@dataclass(frozen=True)
class Variant:
    name: str  # the matrix row: awq, awq-autoawq, gguf-IQ4_XS, ...
    method: str
    format: str
    gguf_type: str | None = None


def variants() -> list[Variant]:
    """Every registered method x every format it declares (GGUF: x a K and an IQ type)."""
    rows = []
    for method in METHODS:
        impl = get_method(method)
        for i, fmt in enumerate(impl.formats):
            name = method if i == 0 else f"{method}-{fmt}"
            if "gguf_types" in impl.Options.__dataclass_fields__:
                rows += [Variant(f"{name}-{t}", method, fmt, t) for t in GGUF_TYPES]
            else:
                rows.append(Variant(name, method, fmt))
    return rows


def cell_id(variant: Variant, fault: str) -> str:
    reason = NOT_INJECTABLE.get((variant.name, fault))
    return f"{variant.name}-{fault}" + (f"[not injectable: {reason}]" if reason else "")


CELLS = [(v, f) for v in variants() for f in FAULTS]


def test_every_registered_method_has_cells():
    """A new method (or format) joins the matrix; it needs only its tiny settings here."""
    rows = {(v.method, v.format) for v, _ in CELLS}
    for method in METHODS:
        assert method in TINY_SETTINGS, f"add {method}'s tiny artifact settings to TINY_SETTINGS"
        for fmt in get_method(method).formats:
            assert (method, fmt) in rows and sum(v.method == method and v.format == fmt for v, _ in CELLS) >= len(FAULTS)
    assert {v.gguf_type for v in variants() if v.gguf_type} == set(GGUF_TYPES)
    assert all(key[0] in {v.name for v in variants()} for key in NOT_INJECTABLE)  # no stale reasons


@pytest.fixture(scope="module")
def built(tiny_llama, tmp_path_factory):
    """One artifact per method and format, made on first use (GGUF: both types in one run)."""
    from quantkit.quantization.quantize import quantize

    cache: dict[tuple[str, str], Path] = {}

    def get(variant: Variant) -> Path:
        key = (variant.method, variant.format)
        if key not in cache:
            settings = dict(TINY_SETTINGS[variant.method])
            if len(get_method(variant.method).formats) > 1:
                settings["format"] = variant.format
            if variant.gguf_type:
                settings["gguf_types"] = list(GGUF_TYPES)
            out = tmp_path_factory.mktemp("faults") / f"{variant.method}-{variant.format}"
            cache[key] = quantize(tiny_llama, variant.method, out, make_options(variant.method, settings))
        return cache[key]

    return get


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory) -> Path:
    """Another model's tokenizer files: a ByteLevel BPE trained here (400 tokens, not SmolLM2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("other-tokenizer")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog " * 4, "hello world, 12345 tokens", "def f(x): return x"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder


def copy_artifact(artifact: Path, variant: Variant, dest: Path) -> tuple[Path, MethodResult]:
    """The artifact's files (GGUF: the one type's file) in ``dest``, and the MethodResult
    quantize would have handed verification, rebuilt from the manifest."""
    manifest = json.loads((artifact / "quantkit.json").read_text())
    extra = {}
    if variant.gguf_type:
        dest.mkdir()
        row = manifest["gguf_files"][variant.gguf_type]
        shutil.copy(artifact / row["file"], dest / row["file"])
        extra = {"gguf_files": {variant.gguf_type: {"file": row["file"]}}}
    else:
        shutil.copytree(artifact, dest)
    return dest, MethodResult(format=manifest["format"], engine=manifest["engine"], settings=manifest["settings"], extra=extra)


def inject(folder: Path, variant: Variant, fault: str, other_tokenizer: Path) -> list[str]:
    """Break the copy in ``folder``; the names of the tensors or files changed."""
    weights = next(folder.glob("*.gguf")) if variant.gguf_type else folder / "model.safetensors"
    if fault == "truncated":
        return faults.truncate(weights)
    if variant.gguf_type:
        if fault == "tokenizer-swapped":  # a GGUF carries its vocabulary: swap two of its entries
            return faults.gguf_swap_tokens(weights)
        if fault == "chat-template-wrong":
            return faults.gguf_wrong_template(weights)
        return faults.gguf_fault(weights, fault)
    if fault == "tokenizer-swapped":
        return faults.swap_tokenizer(folder, other_tokenizer)
    if fault == "chat-template-wrong":
        return faults.wrong_chat_template(folder)
    return faults.safetensors_fault(folder, fault)


@pytest.mark.parametrize(("variant", "fault"), CELLS, ids=[cell_id(v, f) for v, f in CELLS])
def test_fault_is_refused_by_verification(variant, fault, built, tiny_llama, other_tokenizer, tmp_path):
    folder, result = copy_artifact(built(variant), variant, tmp_path / "broken")
    changed = inject(folder, variant, fault, other_tokenizer)
    if (variant.name, fault) in NOT_INJECTABLE:
        assert changed == [], f"{variant.name} has {changed}: inject the fault instead"
        return
    assert changed, f"{fault} found nothing to change in {variant.name}: add a reason to NOT_INJECTABLE"
    with pytest.raises(VerificationError) as refused:
        verify_artifact(folder, tiny_llama, variant.method, result)
    message = str(refused.value)
    expected = CAUGHT_BY.get(fault, CAUGHT_BY["weights"])
    assert any(words in message for words in expected), message
    print(f"\nCELL {variant.name} x {fault}: {message}")


def test_the_intact_artifacts_passed_with_their_base_template(built):
    """The control: each artifact, unbroken, passed the same verification inside quantize (so each
    refusal above is its fault's doing), its chat template compared with the base's."""
    for variant in variants():
        record = json.loads((built(variant) / "quantkit.json").read_text())["verification"]
        rows = record["files"].values() if "files" in record else [record]
        for row in rows:
            assert row["tokenizer_parity"] and row["finite"] and row["top1"] >= row["top1_min"], row
            assert row["base_chat_template"] and row["chat_template"] == row["base_chat_template"], row


def test_chat_template_judged_against_the_base(tmp_path):
    """The check the wrong-template cells need (nothing else saw it): the base's template read as
    transformers reads it (chat_template.jinja first), a different or missing one refused."""
    from quantkit.quantization.verify import base_chat_template, judge
    from quantkit.quantization.verify_runtime import template_digest

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "old {{ x }}"}))
    assert base_chat_template(tmp_path) == template_digest("old {{ x }}")
    (tmp_path / "chat_template.jinja").write_text("new {{ x }}\n")
    assert base_chat_template(tmp_path) == template_digest("new {{ x }}") != template_digest("old {{ x }}")
    assert template_digest([{"name": "default", "template": "a"}, {"name": "tool_use", "template": "b"}]) == template_digest("a")
    row = {"tokenizer_parity": True, "finite": True, "tokens": 255, "top1": 0.9, "bits": 8, "top1_min": 0.6}
    same = template_digest("new {{ x }}")
    assert judge("int8", {**row, "base_chat_template": same, "chat_template": same}) is None
    assert judge("int8", {**row, "base_chat_template": None, "chat_template": None}) is None  # a base without one
    for theirs in (template_digest(faults.WRONG_TEMPLATE), None):
        error = judge("int8", {**row, "base_chat_template": same, "chat_template": theirs})
        assert isinstance(error, VerificationError) and "chat template differs from its base's" in str(error)
