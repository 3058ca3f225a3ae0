"""The artifact's model card, built with the Hub's own ``ModelCard`` / ``ModelCardData``.

The YAML header carries what the Hub reads: ``base_model`` with ``base_model_relation:
quantized`` (the model tree lists it as a quantization), the base's ``license``, the library,
tags per format and the measured results as ``model-index`` eval results. The body repeats the
results as one table (a row per file of a multi-file GGUF artifact) and says how to load it.
The base is named by its hub id only; nothing in a card names a local path.

Results are kept beside the card in ``quantkit-results.json`` (written by ``quantkit report`` /
``quantkit run``), so a card can be rendered again, e.g. for ``quantkit push`` with the repo id.
"""

from pathlib import Path

from quantkit.core.atomic import read_json
from quantkit.core.card_results import eval_results, results_section
from quantkit.core.manifest import CARD, SOURCE_MANIFEST

RESULTS_BEGIN = "<!-- quantkit:results:begin -->"
RESULTS_END = "<!-- quantkit:results:end -->"
HUB_URLS = {"hf": "https://huggingface.co", "modelscope": "https://modelscope.cn/models"}
# How runtimes are written for people (the method declares which load its format).
RUNTIME_NAMES = {"transformers": "transformers", "vllm": "vLLM", "llama.cpp": "llama.cpp", "ollama": "Ollama"}
# A folder artifact's serve command per runtime that has one (a card shows those its method declares).
SERVE_COMMANDS = {"vllm": "vllm serve {where}"}


# model-index metric types; the dataset is quantkit's evaluation text scored against the base
def base_id(manifest: dict) -> str | None:
    """The base model's hub id (``owner/name``); None for a local checkpoint of unknown origin."""
    from quantkit.core.modelinfo import REPO_ID

    repo = (manifest.get("source") or {}).get("repo_id")
    return repo if isinstance(repo, str) and REPO_ID.fullmatch(repo) else None


def base_hub(manifest: dict) -> str:
    """Which hub the base lives on (a bundled model's original is on the Hugging Face Hub)."""
    return "modelscope" if (manifest.get("source") or {}).get("source") == "modelscope" else "hf"


def base_license(manifest: dict) -> str | None:
    """The base's license: the manifest's source record, the base folder's source manifest, then
    the base's own model card."""

    source = manifest.get("source") or {}
    if source.get("license"):
        return str(source["license"])
    folder = Path(source["path"]) if source.get("path") else None
    if folder is None or not folder.is_dir():
        return None
    found = read_json(folder / SOURCE_MANIFEST, default={}).get("license")
    if found:
        return str(found)
    readme = folder / "README.md"
    if readme.is_file():
        from huggingface_hub import ModelCard

        try:
            return ModelCard.load(readme).data.get("license")
        except Exception:  # a base card we cannot parse just has no license for us
            return None
    return None


def artifact_format(manifest: dict) -> str:
    return str(manifest.get("format") or manifest.get("method") or "unknown")


# The Hub library of a manifest written before quantize recorded it (from its method's format, or
# its engine's when the format names none: quantkit.quantization.base.artifact_facts).
OLD_LIBRARY_NAMES = {"gguf": "gguf"}


def declared(manifest: dict) -> dict:
    """What the method declared for this artifact (``quantkit.json``'s ``card``, written at
    quantize); a manifest from before those declarations gets its method and format as tags."""
    card = manifest.get("card") or {}
    fmt = artifact_format(manifest)
    return {
        "library_name": card.get("library_name") or OLD_LIBRARY_NAMES.get(fmt, "transformers"),
        "tags": card.get("tags") or [str(manifest.get("method") or fmt), fmt],
        "needs": card.get("needs", ""),
    }


def runtimes_text(manifest: dict) -> str:
    """Which runtimes load the artifact as it is, from the method's declaration."""
    names = [RUNTIME_NAMES.get(r, r) for r in manifest.get("runtimes") or []]
    return f"Loads without quantkit in: {', '.join(names)}." if names else ""


# --- results ------------------------------------------------------------------------------------


def card_data(manifest: dict, rows: list[dict] | None, model_name: str):
    from huggingface_hub import ModelCardData

    base = base_id(manifest)
    facts = declared(manifest)
    tags = ["quantkit", "quantized", *facts["tags"], *manifest.get("tags", [])]
    extra = {"base_model_relation": "quantized"} if base else {}
    return ModelCardData(
        base_model=base,
        license=base_license(manifest),
        library_name=facts["library_name"],
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(tags)),
        model_name=model_name,
        eval_results=eval_results(rows or [], base),
        quantized_by="quantkit",
        **extra,
    )


def intro(manifest: dict) -> str:
    from quantkit import __version__

    base = base_id(manifest)
    method = str(manifest.get("method") or "unknown").upper()
    version = manifest.get("quantkit_version", __version__)
    if base:
        named = f"[{base}]({HUB_URLS[base_hub(manifest)]}/{base})"
    else:
        model_type = (manifest.get("model") or {}).get("model_type") or (manifest.get("model") or {}).get("architecture")
        named = f"a local checkpoint{f' ({model_type})' if model_type else ''}"
    runtimes = runtimes_text(manifest)
    return f"{method} quantization of {named}, made with quantkit {version}." + (f" {runtimes}" if runtimes else "")


def settings_text(manifest: dict) -> str:
    settings = manifest.get("settings") or {}
    return "\n".join(f"- `{k}`: `{v}`" for k, v in settings.items()) or "- defaults"


def body(manifest: dict, rows: list[dict] | None, usage: str, title: str, notice: str = "") -> str:
    notice = f"\n{notice}\n" if notice else ""
    return f"""
# {title}

{intro(manifest)}
{notice}
## Settings

{settings_text(manifest)}

## Results

{RESULTS_BEGIN}
{results_section(rows, base_id(manifest))}
{RESULTS_END}

## Use it

{usage.strip()}
"""


def render(manifest: dict, rows: list[dict] | None, usage: str, title: str, notice: str = ""):
    """The whole card as a ``huggingface_hub.ModelCard``; ``notice``: a line under the intro (e.g.
    that it was published unvalidated, and why)."""
    from huggingface_hub import ModelCard

    data = card_data(manifest, rows, title)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body(manifest, rows, usage, title, notice)}")


def refill(folder: Path, manifest: dict, rows: list[dict]) -> None:
    """Put ``rows`` into an existing card: its header's model-index and its results section; the
    rest of the body (how to use it) stays as written."""
    from huggingface_hub import ModelCard

    path = Path(folder) / "README.md"
    card = ModelCard.load(path)
    # The artifact's name from its manifest (older cards named it after its folder, e.g. "fp8").
    title = (manifest or {}).get("name") or card.data.get("model_name") or Path(folder).name
    if manifest:
        fresh = card_data(manifest, rows, title)
    else:  # a card without its manifest beside it: keep its header, update the results
        fresh = card.data
        fresh.model_name, fresh.eval_results = title, eval_results(rows, fresh.get("base_model"))
    text = card.text
    section = results_section(rows, base_id(manifest) or card.data.get("base_model"))
    start, end = text.find(RESULTS_BEGIN), text.find(RESULTS_END)
    if start < 0 or end < 0:
        text += f"\n## Results\n\n{RESULTS_BEGIN}\n{section}\n{RESULTS_END}\n"
    else:
        text = text[: start + len(RESULTS_BEGIN)] + "\n" + section + "\n" + text[end:]
    path.write_text(f"---\n{fresh.to_yaml()}\n---\n{text}")


# --- how to load it from a hub repo -------------------------------------------------------------


def hub_usage(manifest: dict, files: list[str], repo_id: str, source: str) -> str:
    """How to load the published repo in each runtime that can (the names are the repo's)."""
    fmt = artifact_format(manifest)
    if source == "modelscope":
        fetch = f"```bash\nmodelscope download --model {repo_id} --local_dir ./{repo_id.split('/')[-1]}\n```"
        where = f"./{repo_id.split('/')[-1]}"
    else:
        fetch = f"```bash\nhf download {repo_id} --local-dir ./{repo_id.split('/')[-1]}\n```"
        where = repo_id
    quantkit_text = (
        f"quantkit (benchmark, chat, OpenAI-compatible server):\n\n```bash\n"
        f"quantkit download {repo_id}{' --source modelscope' if source == 'modelscope' else ''}\n"
        f"quantkit serve ./{repo_id.split('/')[-1]}\n```"
    )
    if fmt == "gguf":
        ggufs = [f for f in files if f.endswith(".gguf")] or ["model.gguf"]
        first = ggufs[0]
        lines = [
            "Files:",
            "",
            *[f"- `{name}`" for name in ggufs],
            "",
            "Fetch them:",
            "",
            fetch,
            "",
            "llama.cpp:",
            "",
            f"```bash\nllama-cli -m {first} -cnv\nllama-server -m {first} --port 8080\n```",
            "",
            "llama-cpp-python (the chat template travels inside the file):",
            "",
            "```python\nfrom llama_cpp import Llama\n\n"
            + (
                f'llm = Llama.from_pretrained(repo_id="{repo_id}", filename="{first}")\n'
                if source == "hf"
                else f'llm = Llama(model_path="{where}/{first}")\n'
            )
            + 'print(llm.create_chat_completion(messages=[{"role": "user", "content": "Hello!"}])'
            '["choices"][0]["message"]["content"])\n```',
            "",
        ]
        if "Modelfile" in files:
            lines += [
                "Ollama (the Modelfile carries the chat template and stop tokens):",
                "",
                f"```bash\nollama create {repo_id.split('/')[-1].lower()} -f Modelfile\n```",
                "",
            ]
        return "\n".join(lines + [quantkit_text])
    needs = declared(manifest)["needs"]
    lines = [
        f"transformers{f' (with {needs} installed)' if needs else ''}:",
        "",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{where}", device_map="auto")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
        'messages = [{"role": "user", "content": "What is the capital of France?"}]\n'
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
        "return_dict=True)\nprint(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))\n```",
        "",
    ]
    if source == "modelscope":
        lines[0:0] = ["Fetch it:", "", fetch, ""]
    for runtime in manifest.get("runtimes") or []:  # the servers the method declares that load it
        if runtime in SERVE_COMMANDS:
            lines += [
                f"{RUNTIME_NAMES.get(runtime, runtime)}:",
                "",
                f"```bash\n{SERVE_COMMANDS[runtime].format(where=where)}\n```",
                "",
            ]
    return "\n".join(lines + [quantkit_text])


def write_model_card(
    folder: Path, manifest: dict, usage: str, results: list[dict] | None = None, title: str | None = None
) -> None:
    """A model card in the Hub's format (``quantkit.core.card``): metadata header, settings, a results
    section that ``quantkit report`` fills in later, and how to load it."""
    render(manifest, results, usage, title or folder.name).save(folder / CARD)
