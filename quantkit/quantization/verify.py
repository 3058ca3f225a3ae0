"""``verify_artifact()``: the last step of every quantize, before the staging folder is renamed.

A fresh interpreter that never imports quantkit (``python -I quantkit/quantization/verify_runtime.py``) loads
the artifact the way a user does, with its engine's recipe (``engine_entry(name).verify``: plain
transformers for awq/nf4/int8, ``llama_cpp.Llama`` for each GGUF file) - and checks that it reads
the evaluation text with the base's token ids, that its logits are finite, and that teacher forced
on a few hundred tokens it picks the base's top token far above chance. Failing that, ``quantize``
publishes nothing; the numbers go into quantkit.json.
"""

import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

from quantkit.core import events
from quantkit.core.child import last_line, run_json_child
from quantkit.core.crash import crash_error, crashed
from quantkit.core.errors import VerificationError
from quantkit.engines import engine_entry

CACHE_VERSION = 1
TOKENS = 256  # teacher-forced positions: ~2 s of forward pass on SmolLM2, enough to see breakage
SCRIPT = Path(__file__).with_name("verify_runtime.py")
# Lowest share of positions whose top token matches the base's, per nominal bit width: a floor
# for "it works at all", far above chance (1/vocab), not a quality gate (bench has those).
# Measured: SmolLM2 nf4 0.69, Q4_K_M 0.83; tiny random Llama/Qwen2 nf4 0.64-0.65, int8 0.96-0.97,
# Llama Q4_K_M 0.82, Q3_K_M 0.74, Q2_K 0.64 (a random model's near-flat logits flip more top
# tokens); zeroed embeddings 0.00-0.02.
TOP1_MIN = {16: 0.80, 8: 0.60, 6: 0.50, 5: 0.45, 4: 0.40, 3: 0.25, 2: 0.15}


def top1_min(bits: int) -> float:
    """The floor for ``bits`` (the nearest width at or below it)."""
    return TOP1_MIN[max((w for w in TOP1_MIN if w <= bits), default=2)]


def eval_text_file() -> Path:
    return Path(str(resources.files("quantkit").joinpath("data/eval.txt")))


def threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def verify_artifact(folder: Path, base_dir: Path, method: str, result, trust_remote_code: bool = False) -> dict:
    """Verify the artifact in ``folder`` (the staging folder) written by ``method`` with ``result``
    (its MethodResult) against ``base_dir``; return the record for quantkit.json or raise
    VerificationError in one line."""
    from quantkit.core.weights import artifact_bits, bits_from_name
    from quantkit.quantization.verify_place import placement, release_quantize_memory

    release_quantize_memory()  # the quantize stage's model must not sit beside the base on a GPU
    folder, base_dir = Path(folder), Path(base_dir)
    device = "cuda" if result.settings.get("device") == "cuda" else "cpu"
    recipe = engine_entry(result.engine).verify
    if recipe.per_file:  # each weights file on its own (a GGUF artifact's types)
        files = method_files(folder, result.extra, engine_entry(result.engine).file_suffix or "")
        targets = {k: str(v) for k, v in files.items()}
        bits = {k: bits_from_name(k) or bits_from_name(v.name) or 16 for k, v in files.items()}
    else:
        targets = {method: str(folder)}
        bits = {method: artifact_bits({"method": method, "settings": result.settings})}
    artifact = {
        "runtime": result.engine,
        "child": str(recipe.child_path()),
        "where": recipe.where,
        "per_file": recipe.per_file,
        "targets": targets,
    }
    devices = placement(folder, base_dir, recipe.on_cpu, device)  # each side where it fits
    spec = {
        "base": str(base_dir),
        "artifact": artifact,
        "text": str(eval_text_file()),
        "tokens": TOKENS,
        "threads": threads(),
        "device": device,
        "base_device": devices["base"],
        "artifact_device": devices["artifact"],
        "trust_remote_code": trust_remote_code,
        "cache": str(base_cache(base_dir, devices["base"])),
    }
    events.logger(__name__).info(
        f"verifying the artifact in a fresh process ({artifact['runtime']}, {TOKENS} tokens teacher forced against the base)"
    )
    answer = run_runtime(spec)
    if answer.get("quantkit_imported"):  # the point is to load it without us
        raise VerificationError("the verification process imported quantkit", hint="verify_runtime.py must stay standalone")
    checked, base_template = {}, base_chat_template(base_dir)
    for label, row in answer["results"].items():
        row["bits"], row["top1_min"] = bits[label], top1_min(bits[label])
        row["base_chat_template"] = base_template
        failure = judge(label, row)
        if failure:
            raise failure
        checked[label] = row
    record = {
        "runtime": artifact["runtime"],
        "process": f"python -I {SCRIPT.name} (quantkit not imported)",
        "text": "quantkit/data/eval.txt",
    }
    if recipe.per_file:
        record["files"] = checked
    else:
        record.update(checked[method])
        record["artifact_s"] = record.pop("seconds")
    record.update(
        base_s=answer.get("base_s"), base_cached=answer.get("base_cached"), seconds=answer.get("seconds")
    )  # the whole check, start to end
    record["devices"] = devices
    return record


def method_files(folder: Path, extra: dict, suffix: str) -> dict[str, Path]:
    """The weights files the method listed in its manifest keys ({label: {"file": name}}, as the
    gguf method's ``gguf_files``), else every ``suffix`` file of the folder by its stem."""
    files = {
        label: folder / row["file"]
        for rows in extra.values()
        if isinstance(rows, dict)
        for label, row in rows.items()
        if isinstance(row, dict) and str(row.get("file", "")).endswith(suffix)
    }
    return files or {path.stem: path for path in sorted(folder.glob(f"*{suffix}"))}


def base_cache(base_dir: Path, device: str) -> Path:
    """Where the base's side of the check is kept (ids, top-64 log-probs: ~130 kB), keyed by the
    base's weights (names, sizes, mtimes), the text and the settings."""
    import hashlib

    from quantkit.core.paths import cache_dir
    from quantkit.core.weights import weights_identity

    blob = json.dumps(
        [
            CACHE_VERSION,
            str(base_dir.resolve()),
            weights_identity(base_dir),
            device,
            TOKENS,
            hashlib.sha256(eval_text_file().read_bytes()).hexdigest(),
        ]
    )
    return cache_dir("verify-base") / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.npz"


def judge(label: str, row: dict) -> VerificationError | None:
    """The one-line error for a row that fails, or None."""
    hint = "the artifact is broken; nothing was published (QUANTKIT_DEBUG=1 shows the full output)"
    if not row["tokenizer_parity"]:
        return VerificationError(
            f"verification of {label}: the artifact's tokenizer reads text differently from its base's "
            f"(first difference at token {row['first_difference']}: base {row['base_ids']} vs artifact "
            f"{row['artifact_ids']})",
            hint="the tokenizer files or the GGUF vocabulary do not match the base",
        )
    if row.get("base_chat_template") and row.get("chat_template") != row["base_chat_template"]:
        # Parity and logits cannot see it, yet every chat prompt would be rendered wrongly.
        return VerificationError(
            f"verification of {label}: the artifact's chat template differs from its base's (sha256 "
            f"{row['base_chat_template']} vs {row.get('chat_template') or 'none'})",
            hint="the chat template files (chat_template.jinja, tokenizer_config.json) or the GGUF's "
            "tokenizer.chat_template do not match the base",
        )
    if not row["finite"]:
        return VerificationError(f"verification of {label}: the artifact's logits contain NaN or inf", hint=hint)
    if row["top1"] < row["top1_min"]:
        return VerificationError(
            f"verification of {label}: the artifact picks its base's top token at only {row['top1']:.0%} of "
            f"{row['tokens']} positions (at least {row['top1_min']:.0%} expected at {row['bits']} bits; "
            f"KL {row['kld_mean']}, PPL ratio {row['ppl_ratio']})",
            hint=hint,
        )
    return None


def base_chat_template(base_dir: Path) -> str | None:
    """The digest of the base's default chat template, read from its files as transformers does
    (chat_template.jinja, then chat_template.json, then tokenizer_config.json); None without one."""
    from quantkit.quantization.verify_runtime import template_digest

    jinja, as_json, config = (base_dir / n for n in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"))
    try:
        if jinja.is_file():
            return template_digest(jinja.read_text(encoding="utf-8"))
        for path in (as_json, config):
            if path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("chat_template"):
                return template_digest(json.loads(path.read_text(encoding="utf-8"))["chat_template"])
    except (OSError, ValueError, AttributeError):
        return None  # an unreadable base file: its tokenizer's own check reports it
    return None


def run_runtime(spec: dict) -> dict:
    """Run verify_runtime.py isolated (-I: no user site, no PYTHONPATH, not the current folder)."""
    started = time.time()
    proc, answer = run_json_child(["-I", str(SCRIPT), json.dumps(spec)], cwd=Path(spec["base"]).anchor or "/", env=runtime_env())
    if os.environ.get("QUANTKIT_DEBUG"):
        sys.stderr.write(proc.stderr)
    if proc.returncode == 0 and "results" in answer:
        return answer
    where = spec["artifact"]["where"]
    reason = answer.get("error") or last_line(proc.stderr) or f"exit code {proc.returncode}"
    if crashed(proc.returncode):
        raise crash_error(where, "verifying the artifact against its base", proc.returncode, reason)
    raise VerificationError(
        f"verification failed after {time.time() - started:.0f}s: {where} could not load or run the artifact: {reason}",
        hint="nothing was published; rerun with QUANTKIT_DEBUG=1 for the runtime's output",
    )


def runtime_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env
