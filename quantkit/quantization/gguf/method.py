"""GGUF through llama.cpp itself: its converter (F16/BF16, once), ``llama-imatrix`` on that file
from quantkit's calibration set (the same samples and chat formatting as AWQ), and
``llama-quantize`` (each other type from that file, with the importance matrix where used), with
the fidelity checks of ``gguf_checks`` and, on request, an Ollama Modelfile. Settings:
``GgufOptions`` below."""

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from quantkit.core import events
from quantkit.core.errors import InputError
from quantkit.core.estimate import Footprint, gguf_footprint
from quantkit.quantization.base import FormatFacts, MethodResult
from quantkit.quantization.gguf.tools import CONVERTER_TYPES, FTYPES  # tables; that module imports nothing heavy
from quantkit.quantization.options import CalibrationOptions, CommonOptions, option

DEFAULT_TYPE = "Q4_K_M"
# Bits per weight of a whole file of each type, scales and mixed tensors included, for the size
# estimates: K and legacy types from llama.cpp's LLaMA-7B table (Q2_K_S: the size of Q2_K in
# llama-quantize's Llama-3-8B list), IQ types from llama-quantize's own list ("3.66 bpw" for IQ3_M).
BITS_PER_WEIGHT = {
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_0": 5.5,
    "Q4_K_M": 4.85,
    "Q4_K_S": 4.58,
    "Q4_0": 4.5,
    "IQ4_XS": 4.25,
    "IQ4_NL": 4.5,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "IQ3_M": 3.66,
    "IQ3_S": 3.44,
    "IQ3_XS": 3.3,
    "IQ3_XXS": 3.06,
    "Q2_K": 3.35,
    "Q2_K_S": 3.35,
    "IQ2_M": 2.7,
    "IQ2_S": 2.5,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "IQ1_M": 1.75,
    "IQ1_S": 1.56,
}
# The importance matrix is on by default at 4 bits and below, where it measured better on SmolLM2
# (docs/gguf.md); above that the grids are fine enough that it changes little.
IMATRIX_MAX_BITS = 4


@dataclass
class GgufOptions(CalibrationOptions, CommonOptions):
    """GGUF's settings; the calibration set (AWQ's, by default the same samples) feeds the importance matrix."""

    gguf_types: list[str] = option(
        [DEFAULT_TYPE], "GGUF type (repeatable): one file each.", choices=tuple(FTYPES), flag="--gguf-type"
    )
    imatrix: bool | None = option(
        None, "Importance matrix from the calibration set (default: on at 4 bits and below; IQ1/IQ2/Q2_K_S need it)."
    )
    ollama: bool = option(False, "Also write an Ollama Modelfile.")
    llama_cpp_dir: Path | None = option(None, "Use this llama.cpp checkout's converter.", recipe=False, envvar="LLAMA_CPP_DIR")

    def __post_init__(self):
        self.gguf_types = list(dict.fromkeys(t.upper() for t in self.gguf_types)) or [DEFAULT_TYPE]


class GgufMethod:
    name = "gguf"
    extra = "gguf"
    Options = GgufOptions
    summary = "GGUF via llama.cpp (Q8_0, Q4_K_M, IQ3_M, ...; llama.cpp, Ollama)"
    label = "GGUF"
    tags = ()
    # One file per type, each its own bits: no "N-bit" tag. vLLM's GGUF loader is experimental.
    formats = {"gguf": FormatFacts("gguf", ("gguf", "llama.cpp"), ("llama.cpp", "ollama"), bits_tag=False)}

    def supports(self, config: dict) -> str | None:
        """Judged against the converter's list only when it is already unpacked (no download here)."""
        from quantkit.quantization.support import gguf_reason

        return gguf_reason(config)

    def check_config(self, config: dict, options: GgufOptions) -> None:
        imatrix_types(options.gguf_types, options.imatrix)  # refuses --no-imatrix with a type that needs one

    def footprint(self, options: GgufOptions) -> Footprint:
        with_imatrix = imatrix_types(options.gguf_types, options.imatrix)
        bits = tuple(BITS_PER_WEIGHT[t] for t in options.gguf_types)
        return gguf_footprint(options.gguf_types, bits, *((options.calib_samples, options.calib_seq_len) if with_imatrix else ()))

    def check(self, model_dir: Path, config: dict, options: GgufOptions) -> None:
        from quantkit.core.preflight import check_quantize_memory
        from quantkit.quantization.calibration import read_records
        from quantkit.quantization.gguf.binaries import tools_bin
        from quantkit.quantization.gguf.preflight import preflight
        from quantkit.quantization.gguf.tools import find_converter, installed_version

        types = options.gguf_types
        self.check_config(config, options)
        installed_version()  # llama-cpp-python runs the checks
        if any(t not in CONVERTER_TYPES for t in types):
            tools_bin()  # llama-quantize / llama-imatrix, built by `make tools`
        if imatrix_types(types, options.imatrix):
            read_records(options.calib)  # a bad --calib file fails now, not after the conversion
        check_quantize_memory(config, self.name, self.footprint(options), options)  # lazy converter: about one F16 copy
        preflight(find_converter(options.llama_cpp_dir), model_dir, config)

    def quantize(self, model_dir: Path, out_dir: Path, options: GgufOptions) -> MethodResult:
        from quantkit.quantization.gguf import checks as gguf_checks
        from quantkit.quantization.gguf.binaries import quantize_file
        from quantkit.quantization.gguf.tools import convert, converter_view, find_converter

        types = options.gguf_types
        with_imatrix = imatrix_types(types, options.imatrix)
        converter = find_converter(options.llama_cpp_dir)
        name = artifact_stem(model_dir)
        files, fallbacks = {}, {}
        # Quantized types start from F16 (BF16 if that is asked for and F16 is not): one conversion.
        base = "F16" if "F16" in types or "BF16" not in types else "BF16"
        with_base = [t for t in CONVERTER_TYPES if t in types] or [base]
        scratch = out_dir / ".work"
        scratch.mkdir()
        source, fixes = converter_view(model_dir, scratch)
        converter_args = {}
        for ftype in dict.fromkeys([base, *with_base]):
            target = (out_dir if ftype in types else scratch) / f"{name}-{ftype}.gguf"
            converter_args[ftype] = convert(converter, source, target, outtype=ftype)
            if ftype in types:
                files[ftype] = target
        base_file = files.get(base) or scratch / f"{name}-{base}.gguf"
        imatrix_file, imatrix_record = make_imatrix(model_dir, base_file, scratch, options) if with_imatrix else (None, None)
        for ftype in types:
            if ftype not in CONVERTER_TYPES:
                files[ftype] = out_dir / f"{name}-{ftype}.gguf"
                fallbacks[ftype] = quantize_file(
                    base_file, files[ftype], ftype, imatrix=imatrix_file if ftype in with_imatrix else None
                )
        shutil.rmtree(scratch)
        ordered = {t: files[t] for t in types}
        checks = gguf_checks.verify(model_dir, ordered)
        per_file = {t: file_record(path, fallbacks.get(t, []), checks[t]) for t, path in ordered.items()}
        extra = {
            "library_name": "gguf",
            "tags": ["gguf", "llama.cpp", *types],
            "gguf_file": ordered[types[0]].name,
            "llama_cpp": llama_cpp_record(converter, any(t not in CONVERTER_TYPES for t in types)),
            "converter_args": converter_args,
            "converter_input_fixes": fixes,
            "gguf_files": per_file,
            "checks": checks,
        }
        for ftype, result in checks.items():
            if not result.get("smoke_chat", {}).get("stopped_by_itself", True):
                events.logger(__name__).warning(f"the {ftype} smoke chat did not stop within its token budget")
        if imatrix_record:
            extra["imatrix"] = imatrix_record
            extra["calibration"] = imatrix_record["calibration"]
        if options.ollama:
            extra["ollama"] = write_modelfiles(out_dir, ordered, model_dir, checks[types[0]]["metadata"])
        return MethodResult(
            format="gguf",
            engine="llama.cpp",
            settings={
                "gguf_types": types,
                "base_type": base,
                "imatrix": {None: "auto", True: "on", False: "off"}[options.imatrix],
                "imatrix_types": with_imatrix,
            },
            extra=extra,
            usage=usage(ordered, options.ollama, name),
        )


def imatrix_types(types: list[str], imatrix: bool | None) -> list[str]:
    """The quantized types made with the importance matrix: all (``imatrix`` True), none (False;
    refused when a type cannot be made without one), else those of IMATRIX_MAX_BITS or fewer."""
    from quantkit.quantization.gguf.tools import NEEDS_IMATRIX

    quantized = [t for t in types if t not in CONVERTER_TYPES]
    if imatrix is False:
        refused = [t for t in quantized if t in NEEDS_IMATRIX]
        if refused:
            raise InputError(
                f"imatrix off: llama.cpp cannot make {', '.join(refused)} without an importance matrix",
                hint="leave the importance matrix on, or choose a type such as Q4_K_M or Q2_K",
            )
        return []
    return [t for t in quantized if imatrix or FTYPES[t] <= IMATRIX_MAX_BITS or t in NEEDS_IMATRIX]


def make_imatrix(model_dir: Path, base_file: Path, scratch: Path, options: GgufOptions) -> tuple[Path, dict]:
    """llama-imatrix on the 16-bit GGUF over quantkit's calibration samples (written as one text
    file, chunked by the sequence length); returns the imatrix file and its manifest record."""
    from quantkit.quantization import calibration
    from quantkit.quantization.gguf.binaries import compute_imatrix
    from quantkit.quantization.gguf.checks import hf_tokenizer

    tokenizer = hf_tokenizer(model_dir)
    calib = calibration.build(tokenizer, options.calib, options.calib_samples, options.calib_seq_len)
    text = "\n\n".join(calib.samples)
    n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    ctx = min(calib.seq_len, n_tokens // 2)  # llama-imatrix wants at least two chunks
    if ctx < 8:
        raise InputError(
            f"the calibration set holds only {n_tokens} tokens: too few for an importance matrix",
            hint="give a longer calibration text, or more calibration samples",
        )
    (scratch / "calibration.txt").write_text(text, encoding="utf-8")
    out = scratch / "imatrix.gguf"
    run = compute_imatrix(base_file, scratch / "calibration.txt", out, ctx=ctx)
    record = {
        "calibration": calib.record(),
        "tokens": n_tokens,
        **run,
        "from": base_file.name.rsplit("-", 1)[-1].removesuffix(".gguf"),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    return out, record


def llama_cpp_record(converter, with_tools: bool) -> dict:
    """The llama.cpp commit of converter, tools and runtime (one commit when all come from the sdist)."""
    from quantkit.engines.llamacpp_build import build_record
    from quantkit.quantization.gguf.binaries import tools_record
    from quantkit.quantization.gguf.tools import installed_version, runtime_commit

    record = {
        "commit": converter.commit,
        "converter": converter.origin,
        "llama_cpp_python": installed_version(),
        "runtime_commit": runtime_commit(),
        "runtime_build": build_record(),  # its CPU flags and system_info: what a crash report needs
    }
    if with_tools:
        record.update(tools_record())
    commits = {record.get(k) for k in ("commit", "runtime_commit", "tools_commit") if k in record}
    record["one_commit"] = len(commits) == 1 and None not in commits
    return record


def artifact_stem(model_dir: Path) -> str:
    """NAME in NAME-Q4_K_M.gguf: the source repo's name when known, else the folder's."""
    from quantkit.core.atomic import read_json
    from quantkit.core.manifest import SOURCE_MANIFEST

    repo = read_json(model_dir / SOURCE_MANIFEST, default={}).get("repo_id")
    return repo.rsplit("/", 1)[-1] if repo else model_dir.name


def file_record(path: Path, fallbacks: list[dict], check: dict) -> dict:
    """Size, bits per weight and tensor types of one GGUF file (as the checks read it back with
    gguf.GGUFReader); the fallback tensors llama.cpp logged, with the type the file really holds."""
    from collections import Counter

    kinds, n_params = check.pop("tensors"), check.pop("n_params")
    size = path.stat().st_size
    for row in fallbacks:
        row["in_file"] = kinds.get(row["tensor"])
    return {
        "file": path.name,
        "size_bytes": size,
        "n_params": n_params,
        "bits_per_weight": round(size * 8 / n_params, 3) if n_params else None,
        "tensor_types": dict(Counter(kinds.values()).most_common()),
        "n_tensors": len(kinds),
        "n_fallback": len(fallbacks),
        "fallback_tensors": fallbacks,
    }


def write_modelfiles(out_dir: Path, files: dict[str, Path], model_dir: Path, metadata: dict) -> dict:
    """``Modelfile`` for the first type, ``Modelfile.TYPE`` for the others."""
    from quantkit.quantization.gguf.checks import hf_tokenizer
    from quantkit.quantization.gguf.ollama import MODELFILE, write_modelfile

    tokenizer = hf_tokenizer(model_dir)
    if not tokenizer.chat_template:
        raise InputError(
            "the model has no chat template to translate into an Ollama TEMPLATE",
            hint="leave out `ollama`, or add a chat template to the model folder",
        )
    stops = [s for s in (metadata.get("end_of_turn"), metadata.get("eot_token"), metadata.get("eos_token")) if s]
    written = {}
    for i, (ftype, path) in enumerate(files.items()):
        name = MODELFILE if i == 0 else f"{MODELFILE}.{ftype}"
        write_modelfile(
            out_dir,
            path.name,
            tokenizer.chat_template,
            stops,
            bos=tokenizer.bos_token or "",
            eos=tokenizer.eos_token or "",
            name=name,
        )
        written[ftype] = name
    return {"modelfiles": written, "stop": list(dict.fromkeys(stops))}


def usage(files: dict[str, Path], ollama: bool, name: str) -> str:
    first = next(iter(files.values())).name
    listing = "\n".join(f"- `{path.name}` ({ftype})" for ftype, path in files.items())
    if ollama:
        ollama_text = f"```bash\nollama create {name.lower()} -f Modelfile\nollama run {name.lower()}\n```"
    else:  # Ollama guesses the template from the file; `--ollama` writes it out with the stop tokens
        ollama_text = (
            f"```bash\necho 'FROM ./{first}' > Modelfile\nollama create {name.lower()} -f Modelfile\n```\n\n"
            "`quantkit quantize ... --ollama` writes a Modelfile with the chat template and stop tokens."
        )
    return f"""Files:

{listing}

llama.cpp:

```bash
llama-cli -m {first} -cnv
llama-server -m {first} --host 127.0.0.1 --port 8080
```

llama-cpp-python (the chat template travels inside the file):

```python
from llama_cpp import Llama

llm = Llama(model_path="{first}", n_ctx=4096)
print(llm.create_chat_completion(messages=[{{"role": "user", "content": "Hello!"}}])["choices"][0]["message"]["content"])
```

Ollama:

{ollama_text}
"""
