"""Which method can quantize which architecture, answered by the libraries' own tables, from
config.json alone (no weight is loaded, no calibration sample is run):

- transformers: its model-type tables (``CONFIG_MAPPING_NAMES``, ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``).
  Importing ``transformers.models.auto`` imports torch (~10 s cold), so the tables are read from
  the installed sources with ``ast`` and cached per transformers version.
- llm-compressor's AWQ: its mapping registry (``AWQ_MAPPING_REGISTRY``, read the same way), else
  its Llama-shaped default, which must resolve on the model's own module names (a meta-device
  model: no memory, no weights); quantkit adds mappings for a few architectures the registry
  lacks, and refuses mixture-of-experts models (their fused experts do not round-trip).
- llama.cpp: the architectures its converter registers (``llamacpp_tools.supported_architectures``).
- bitsandbytes: any causal LM transformers loads (it replaces nn.Linear generically).

Every ``*_reason`` returns None (supported) or one line: the reason, then the fix.
"""

import ast
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, util
from pathlib import Path

from quantkit.modelinfo import text_config

# Keys that hold an expert count in the configs of transformers' MoE models.
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
NOT_AWQ_FIX = "use --method gguf or nf4"


@dataclass(frozen=True)
class Mapping:
    """An AWQ mapping as llm-compressor spells it: the smoothed module and the layers it feeds."""

    smooth: str
    balance: tuple[str, ...]


def llama_mappings(mlp_in: tuple[str, ...], mlp_pair: tuple[str, str] | None) -> tuple[Mapping, ...]:
    """Pre-norm attention (input_layernorm -> q/k/v, v -> o), then post_attention_layernorm feeding
    ``mlp_in`` and, when the MLP's first output scales into its second linearly, that pair."""
    rows = [Mapping("re:.*input_layernorm$", ("re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$")),
            Mapping("re:.*v_proj$", ("re:.*o_proj$",)),
            Mapping("re:.*post_attention_layernorm$", mlp_in)]
    if mlp_pair:
        rows.append(Mapping(mlp_pair[0], (mlp_pair[1],)))
    return tuple(rows)


# Architectures llm-compressor 0.14's registry lacks whose default mapping crashes mid-calibration,
# each checked by tests/test_architectures.py (tiny model -> AWQ -> reload in plain transformers).
QUANTKIT_AWQ_MAPPINGS: dict[str, tuple[Mapping, ...]] = {
    # OLMo-2 normalizes after attention and MLP (no input_layernorm): only linear-to-linear pairs
    # can be smoothed, as llm-compressor registers for OLMo and OLMo-3.
    "Olmo2ForCausalLM": (Mapping("re:.*v_proj$", ("re:.*o_proj$",)),
                         Mapping("re:.*up_proj$", ("re:.*down_proj$",))),
    # StarCoder2: LayerNorm -> c_fc -> GELU -> c_proj (no gated pair to smooth).
    "Starcoder2ForCausalLM": llama_mappings(("re:.*mlp.c_fc$",), None),
    # GLM-4: fused gate_up_proj (its up half scales into down_proj, as for Phi-3).
    "Glm4ForCausalLM": llama_mappings(("re:.*gate_up_proj$",), ("re:.*gate_up_proj$", "re:.*down_proj$")),
    # Phi-1/2: attention and MLP in parallel on one input_layernorm (as llm-compressor does for Cohere).
    "PhiForCausalLM": (Mapping("re:.*input_layernorm$", ("re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$",
                                                          "re:.*mlp.fc1$")),),
    # Falcon (7B layout): parallel attention and MLP on one input_layernorm.
    "FalconForCausalLM": (Mapping("re:.*input_layernorm$", ("re:.*query_key_value$", "re:.*dense_h_to_4h$")),),
    # GPT-NeoX (Pythia): fused query_key_value; each norm feeds one projection.
    "GPTNeoXForCausalLM": (Mapping("re:.*input_layernorm$", ("re:.*query_key_value$",)),
                           Mapping("re:.*post_attention_layernorm$", ("re:.*dense_h_to_4h$",))),
}


def package_root(name: str) -> Path | None:
    """The installed package's folder, found without importing it."""
    spec = util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cached_tables(name: str, version: str, build) -> dict:
    """``build()``'s JSON-able tables, cached under the quantkit cache per library version."""
    from quantkit.paths import cache_dir

    path = cache_dir("support") / f"{name}-{version}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        pass
    tables = build()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(tables, indent=1, sort_keys=True))
    tmp.replace(path)
    return tables


def literal_assignments(path: Path, names: tuple[str, ...], found: dict | None = None) -> dict[str, dict]:
    """Module-level ``NAME = OrderedDict([...])`` / ``NAME = {...}`` literals of a source file,
    ``NAME.update({...})`` calls and ``NAME = OrderedDict(**{...}, **NAME)`` merges, evaluated
    without running the module. ``found`` carries tables imported from another file."""
    found = {k: dict(v) for k, v in (found or {}).items()}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and getattr(node.targets[0], "id", None) in names:
            name, value = node.targets[0].id, node.value
            if isinstance(value, ast.Call):  # OrderedDict([...]) or OrderedDict(**{...}, **NAME)
                merged = dict(found.get(name, {}))
                for kw in value.keywords:
                    if kw.arg is None and isinstance(kw.value, ast.Dict):
                        merged.update(ast.literal_eval(kw.value))
                if value.args:
                    try:
                        merged = dict(ast.literal_eval(value.args[0]))
                    except ValueError:
                        continue
                found[name] = merged
            else:
                try:
                    found[name] = dict(ast.literal_eval(value))
                except ValueError:
                    continue
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            target = getattr(getattr(func, "value", None), "id", None)
            if getattr(func, "attr", None) == "update" and target in names and node.value.args:
                try:
                    found.setdefault(target, {}).update(ast.literal_eval(node.value.args[0]))
                except ValueError:
                    continue
    return found


@lru_cache(maxsize=1)
def transformers_tables() -> dict:
    """{"version", "config": model_type -> config class, "causal_lm": model_type -> [classes]}."""
    root, version = package_root("transformers"), version_of("transformers")
    if root is None or version is None:
        return {"version": None, "config": {}, "causal_lm": {}}

    def build() -> dict:
        auto = root / "models" / "auto"
        tables: dict = {}
        for name in ("auto_mappings.py", "configuration_auto.py"):  # the second extends the first's
            if (auto / name).is_file():
                tables = literal_assignments(auto / name, ("CONFIG_MAPPING_NAMES",), tables)
        config = tables.get("CONFIG_MAPPING_NAMES", {})
        causal = literal_assignments(auto / "modeling_auto.py", ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",))
        causal_lm = {k: [v] if isinstance(v, str) else list(v)
                     for k, v in causal.get("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", {}).items()}
        return {"version": version, "config": config, "causal_lm": causal_lm}

    return cached_tables("transformers", version, build)


def transformers_knows(model_type: str) -> bool:
    """Whether transformers itself implements ``model_type`` (no remote code needed)."""
    return model_type in transformers_tables()["config"]


def causal_lm_reason(config: dict) -> str | None:
    """None when AutoModelForCausalLM loads this config (with transformers' own code, or the
    model's when it ships some); else why not, and the fix."""
    archs = config.get("architectures") or []
    model_type = str(config.get("model_type") or "")
    if not archs:
        return "config.json names no architecture (add \"architectures\" to config.json)"
    if "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return None  # the model's own code; require_trusted_code asks for --trust-remote-code
    tables = transformers_tables()
    version = tables["version"] or "(not installed)"
    if not transformers_knows(model_type):
        return (f"transformers {version} has no implementation of model type {model_type!r} and the model ships "
                "no code (upgrade transformers, or use a checkpoint with its own modeling code)")
    causal_classes = {c for classes in tables["causal_lm"].values() for c in classes}
    if model_type not in tables["causal_lm"] or not (archs[0] in causal_classes or archs[0].endswith("ForCausalLM")):
        return (f"{archs[0]} is not a causal language model (transformers {version} loads model type "
                f"{model_type!r} with no AutoModelForCausalLM class); only decoder-only causal LMs are supported")
    return None


def bnb_reason(config: dict) -> str | None:
    """bitsandbytes: any causal LM transformers loads, as long as its layers are the modules
    transformers' integration replaces (exactly torch.nn.Linear or Conv1D, not a subclass)."""
    if (reason := causal_lm_reason(config)) is not None:
        return reason
    if "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return None  # remote code: its module types are known only after running it
    architecture = config["architectures"][0]
    types = decoder_linear_types(config)
    if types and not types & {"Linear", "Conv1D"}:
        return (f"transformers' bitsandbytes integration replaces only torch.nn.Linear and Conv1D modules, and "
                f"{architecture}'s layers are {', '.join(sorted(types))}: nothing would be quantized "
                "(use --method gguf or awq)")
    return None


def decoder_linear_types(config: dict) -> set[str]:
    """Class names of the Linear-like modules (nn.Linear, its subclasses, Conv1D) in the first
    decoder layer, from a meta-device model; cached per transformers version and architecture."""
    architecture = (config.get("architectures") or ["?"])[0]
    version = version_of("transformers") or "none"
    from quantkit.paths import cache_dir

    path = cache_dir("support") / f"linear-types-transformers-{version}.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        known = {}
    if architecture not in known:
        try:
            known[architecture] = sorted(meta_linear_types(config))
        except Exception:  # noqa: BLE001 - a config transformers cannot build: nothing to judge here
            return set()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        tmp.replace(path)
    return set(known[architecture])


def n_experts(config: dict) -> int:
    cfg = text_config(config)
    return max([int(cfg.get(k) or 0) for k in EXPERT_KEYS] + [0])


@lru_cache(maxsize=1)
def llmcompressor_awq_tables() -> dict:
    """{"version", "registry": architecture -> [[smooth, [balance...]]...], "dynamic": [architectures],
    "default": [...]} from the installed llm-compressor's AWQ mapping sources."""
    root, version = package_root("llmcompressor"), version_of("llmcompressor")
    if root is None or version is None:
        return {"version": None, "registry": {}, "dynamic": [], "default": []}

    def build() -> dict:
        folder = root / "modifiers" / "transform" / "awq"
        tree = ast.parse((folder / "mappings.py").read_text())
        lists: dict[str, list] = {}
        registry_node = None
        for node in tree.body:
            target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
            name = getattr(target, "id", None)
            if name == "AWQ_MAPPING_REGISTRY":
                registry_node = node.value
            elif isinstance(node.value if name else None, ast.List):
                lists[name] = [mapping_literal(call) for call in node.value.elts if isinstance(call, ast.Call)]
            elif name and isinstance(node.value, ast.Name) and node.value.id in lists:  # an alias
                lists[name] = lists[node.value.id]
        registry = {}
        if isinstance(registry_node, ast.Dict):
            for key, value in zip(registry_node.keys, registry_node.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.Name) and value.id in lists:
                    registry[key.value] = lists[value.id]
        dynamic_src = (folder / "dynamic_mappings.py").read_text() if (folder / "dynamic_mappings.py").is_file() else ""
        block = dynamic_src.split("AWQ_DYNAMIC_MAPPING_REGISTRY", 2)[-1]
        dynamic = re.findall(r'^\s*"(\w+)":\s*\w+,', block, re.MULTILINE)
        return {"version": version, "registry": registry, "dynamic": dynamic,
                "default": lists.get("default_mappings", [])}

    return cached_tables("llmcompressor-awq", version, build)


def mapping_literal(call: ast.Call) -> list:
    """AWQMapping("smooth", ["balance", ...]) -> ["smooth", ["balance", ...]]."""
    args = [ast.literal_eval(a) for a in call.args[:2]]
    for kw in call.keywords:
        if kw.arg in ("smooth_layer", "balance_layers"):
            args.append(ast.literal_eval(kw.value))
    return args[:2]


def awq_mapping_source(architecture: str) -> tuple[str, tuple[Mapping, ...] | None]:
    """Where this architecture's AWQ mappings come from: ("quantkit" | "llm-compressor" |
    "llm-compressor (dynamic)" | "default", the mappings when they are static)."""
    if architecture in QUANTKIT_AWQ_MAPPINGS:
        return "quantkit", QUANTKIT_AWQ_MAPPINGS[architecture]
    tables = llmcompressor_awq_tables()
    if architecture in tables["dynamic"]:
        return "llm-compressor (dynamic)", None
    if architecture in tables["registry"]:
        return "llm-compressor", tuple(Mapping(s, tuple(b)) for s, b in tables["registry"][architecture])
    return "default", tuple(Mapping(s, tuple(b)) for s, b in tables["default"])


def awq_reason(config: dict) -> str | None:
    """None when llm-compressor's AWQ can smooth and quantize this architecture; else why not."""
    if (reason := causal_lm_reason(config)) is not None:
        return reason
    if not text_config(config).get("hidden_size"):
        return "config.json has no hidden_size, so AWQ's layer widths cannot be checked"
    architecture = (config.get("architectures") or ["?"])[0]
    if n_experts(config) > 1:
        return (f"AWQ of {architecture}'s mixture-of-experts layers is not supported: llm-compressor "
                f"linearizes the fused experts and the checkpoint it writes does not load back in transformers ({NOT_AWQ_FIX})")
    if llmcompressor_awq_tables()["version"] is None:
        return None  # check() says to install the extra; nothing to judge the mappings against
    source, mappings = awq_mapping_source(architecture)
    if source != "default":
        return None  # the registry's own (or quantkit's tested) mappings for this architecture
    if "AutoModelForCausalLM" in (config.get("auto_map") or {}):
        return None  # remote code: its module names are known only after running it
    return default_mapping_reason(config, mappings)


def default_mapping_reason(config: dict, mappings: tuple[Mapping, ...]) -> str | None:
    """llm-compressor falls back to Llama-shaped mappings for an architecture it does not list;
    they work only if each resolves, with matching widths, in the model's own decoder layer."""
    try:
        layer = meta_decoder_layer(config)
    except Exception as exc:  # noqa: BLE001 - a config transformers cannot build is reported, not raised
        return f"cannot build {config.get('architectures', ['?'])[0]} on the meta device to check AWQ mappings: {exc}"
    architecture = config["architectures"][0]
    for mapping in mappings:
        problem = mapping_problem(mapping, layer)
        if problem:
            return (f"llm-compressor has no AWQ mapping for {architecture} and its default (Llama-shaped) one "
                    f"does not fit: {problem} ({NOT_AWQ_FIX})")
    return None


def mapping_problem(mapping: Mapping, layer: dict[str, tuple[str, int | None, int | None]]) -> str | None:
    """Why ``mapping`` cannot be resolved in one decoder layer (name -> (kind, in, out)), or None."""
    smooth = [n for n in layer if matches(mapping.smooth, n)]
    if len(smooth) != 1:
        return f"{len(smooth)} modules match {mapping.smooth.removeprefix('re:')}"
    _, _, smooth_out = layer[smooth[0]]
    for pattern in mapping.balance:
        hits = [n for n in layer if matches(pattern, n)]
        if not hits:
            return f"no module matches {pattern.removeprefix('re:')} (smoothed from {smooth[0]})"
        for name in hits:
            kind, width_in, _ = layer[name]
            if kind != "linear":
                return f"{name} is not a Linear layer"
            from_linear = layer[smooth[0]][0] == "linear"
            fused = from_linear and smooth_out and width_in and smooth_out % width_in == 0  # qkv_proj, gate_up_proj
            skipped = from_linear and name.endswith(".o_proj")  # llm-compressor skips v_proj -> o_proj under GQA
            if smooth_out and width_in and smooth_out != width_in and not (fused or skipped):
                return f"{smooth[0]} gives {smooth_out} features but {name} takes {width_in}"
    return None


def matches(pattern: str, name: str) -> bool:
    return re.match(pattern[3:], name) is not None if pattern.startswith("re:") else name == pattern


def meta_layer_modules(config: dict) -> list[tuple[str, object]]:
    """(name, module) of the first decoder layer of a model built from ``config`` on the meta
    device (accelerate's init_empty_weights: no memory, no weights)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    cfg = AutoConfig.for_model(config["model_type"], **settings)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(cfg)
    prefix, found = None, []
    for name, module in model.named_modules():
        if prefix is None and isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            prefix = f"{name}.0."
        if prefix is not None and name.startswith(prefix):
            found.append((name, module))
    return found


def meta_linear_types(config: dict) -> set[str]:
    import torch

    return {type(m).__name__ for _, m in meta_layer_modules(config)
            if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"}


def meta_decoder_layer(config: dict) -> dict[str, tuple[str, int | None, int | None]]:
    """The first decoder layer's modules (meta device): full name -> (kind, in, out)."""
    import torch

    modules: dict[str, tuple[str, int | None, int | None]] = {}
    for name, module in meta_layer_modules(config):
        if isinstance(module, torch.nn.Linear):
            modules[name] = ("linear", module.in_features, module.out_features)
        elif "norm" in type(module).__name__.lower() and getattr(module, "weight", None) is not None:
            modules[name] = ("norm", None, module.weight.shape[-1])
        else:
            modules[name] = ("other", None, None)
    return modules


def awq_layer_mappings(model) -> list:
    """llm-compressor AWQMapping objects for ``model``: quantkit's for the architectures it adds,
    else llm-compressor's own inference (registry, dynamic builders, default)."""
    from llmcompressor.modifiers.transform.awq import AWQMapping, get_layer_mappings_from_model

    own = QUANTKIT_AWQ_MAPPINGS.get(type(model).__name__)
    if own is None:
        return get_layer_mappings_from_model(model)
    return [AWQMapping(m.smooth, list(m.balance)) for m in own]


def gguf_reason(config: dict) -> str | None:
    """llama.cpp's converter must register the architecture (judged when the converter is at hand:
    unpacked already, or a --llama-cpp-dir checkout; otherwise quantize's preflight judges it)."""
    from quantkit.llamacpp_tools import cached_converter, supported_architectures

    archs = config.get("architectures") or []
    if not archs:
        return "config.json names no architecture (add \"architectures\" to config.json)"
    converter = cached_converter()
    if converter is not None and archs[0] not in supported_architectures(converter):
        return (f"llama.cpp's converter ({converter.origin}) does not support architecture {archs[0]} "
                "(use --method nf4 or int8, or a newer llama.cpp checkout via --llama-cpp-dir)")
    return None


def sentencepiece_only(converter, architecture: str) -> bool:
    """Whether llama.cpp's converter class for ``architecture`` reads the vocabulary only from a
    SentencePiece ``tokenizer.model``: its ``set_vocab`` calls ``_set_vocab_sentencepiece()``
    unconditionally (Gemma 2 does; Llama and Gemma 3 fall back to tokenizer.json)."""
    sources = [converter.script, *sorted((converter.root / "conversion").glob("*.py"))]
    for path in sources:
        text = path.read_text() if path.is_file() else ""
        if f'"{architecture}"' not in text:
            continue
        for node in ast.parse(text).body:
            if not isinstance(node, ast.ClassDef) or not any(
                    isinstance(d, ast.Call) and getattr(d.func, "attr", None) == "register"
                    and any(isinstance(a, ast.Constant) and a.value == architecture for a in d.args)
                    for d in node.decorator_list):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "set_vocab":
                    return any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                               and getattr(s.value.func, "attr", None) == "_set_vocab_sentencepiece"
                               for s in item.body)
            return False
    return False


def converter_vocab_reason(converter, model_dir: Path, architecture: str) -> str | None:
    """Why llama.cpp's converter would fail on this folder's tokenizer files, found up front."""
    if sentencepiece_only(converter, architecture) and not (Path(model_dir) / "tokenizer.model").is_file():
        return (f"llama.cpp's converter reads {architecture}'s vocabulary only from a SentencePiece "
                f"tokenizer.model, and {Path(model_dir).name} has none (add the model's tokenizer.model, "
                "or use --method nf4 or int8)")
    return None
