"""Can llm-compressor's AWQ smooth and quantize this architecture? Its mapping registry
(``AWQ_MAPPING_REGISTRY``, read from its sources), else its Llama-shaped default, which must resolve
on the model's own module names (a meta-device model); quantkit adds mappings for a few
architectures the registry lacks, and refuses mixture-of-experts models (their fused experts do
not round-trip)."""

import ast
import re
from dataclasses import dataclass
from functools import lru_cache

from quantkit.core.library_tables import cached_tables, package_root, version_of
from quantkit.core.meta_model import meta_decoder_layer
from quantkit.core.modelinfo import text_config
from quantkit.quantization.support import causal_lm_reason

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
    rows = [
        Mapping("re:.*input_layernorm$", ("re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$")),
        Mapping("re:.*v_proj$", ("re:.*o_proj$",)),
        Mapping("re:.*post_attention_layernorm$", mlp_in),
    ]
    if mlp_pair:
        rows.append(Mapping(mlp_pair[0], (mlp_pair[1],)))
    return tuple(rows)


# Architectures llm-compressor 0.14's registry lacks whose default mapping crashes mid-calibration,
# each checked by tests/test_architectures.py (tiny model -> AWQ -> reload in plain transformers).
QUANTKIT_AWQ_MAPPINGS: dict[str, tuple[Mapping, ...]] = {
    # OLMo-2 normalizes after attention and MLP (no input_layernorm): only linear-to-linear pairs
    # can be smoothed, as llm-compressor registers for OLMo and OLMo-3.
    "Olmo2ForCausalLM": (Mapping("re:.*v_proj$", ("re:.*o_proj$",)), Mapping("re:.*up_proj$", ("re:.*down_proj$",))),
    # StarCoder2: LayerNorm -> c_fc -> GELU -> c_proj (no gated pair to smooth).
    "Starcoder2ForCausalLM": llama_mappings(("re:.*mlp.c_fc$",), None),
    # GLM-4: fused gate_up_proj (its up half scales into down_proj, as for Phi-3).
    "Glm4ForCausalLM": llama_mappings(("re:.*gate_up_proj$",), ("re:.*gate_up_proj$", "re:.*down_proj$")),
    # Phi-1/2: attention and MLP in parallel on one input_layernorm (as llm-compressor does for Cohere).
    "PhiForCausalLM": (Mapping("re:.*input_layernorm$", ("re:.*q_proj$", "re:.*k_proj$", "re:.*v_proj$", "re:.*mlp.fc1$")),),
    # Falcon (7B layout): parallel attention and MLP on one input_layernorm.
    "FalconForCausalLM": (Mapping("re:.*input_layernorm$", ("re:.*query_key_value$", "re:.*dense_h_to_4h$")),),
    # GPT-NeoX (Pythia): fused query_key_value; each norm feeds one projection.
    "GPTNeoXForCausalLM": (
        Mapping("re:.*input_layernorm$", ("re:.*query_key_value$",)),
        Mapping("re:.*post_attention_layernorm$", ("re:.*dense_h_to_4h$",)),
    ),
}


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
            target = (
                node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
            )
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
        return {"version": version, "registry": registry, "dynamic": dynamic, "default": lists.get("default_mappings", [])}

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
        return (
            f"AWQ of {architecture}'s mixture-of-experts layers is not supported: llm-compressor "
            f"linearizes the fused experts and the checkpoint it writes does not load back in transformers ({NOT_AWQ_FIX})"
        )
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
            return (
                f"llm-compressor has no AWQ mapping for {architecture} and its default (Llama-shaped) one "
                f"does not fit: {problem} ({NOT_AWQ_FIX})"
            )
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


def awq_layer_mappings(model) -> list:
    """llm-compressor AWQMapping objects for ``model``: quantkit's for the architectures it adds,
    else llm-compressor's own inference (registry, dynamic builders, default)."""
    from llmcompressor.modifiers.transform.awq import AWQMapping, get_layer_mappings_from_model

    own = QUANTKIT_AWQ_MAPPINGS.get(type(model).__name__)
    if own is None:
        return get_layer_mappings_from_model(model)
    return [AWQMapping(m.smooth, list(m.balance)) for m in own]
