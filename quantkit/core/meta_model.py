"""A model's first decoder layer as transformers builds it from config.json on the meta device
(accelerate's init_empty_weights: no memory, no weights): module names, types and widths, for
judging a method before any weight is loaded."""

from quantkit.core.atomic import read_json, write_json
from quantkit.core.library_tables import version_of


def decoder_linear_types(config: dict) -> set[str]:
    """Class names of the Linear-like modules (nn.Linear, its subclasses, Conv1D) in the first
    decoder layer, from a meta-device model; cached per transformers version and architecture."""
    architecture = (config.get("architectures") or ["?"])[0]
    version = version_of("transformers") or "none"
    from quantkit.core.paths import cache_dir

    path = cache_dir("support") / f"linear-types-transformers-{version}.json"
    known = read_json(path, default={})
    if architecture not in known:
        try:
            known[architecture] = sorted(meta_linear_types(config))
        except Exception:  # noqa: BLE001 - a config transformers cannot build: nothing to judge here
            return set()
        write_json(path, known, indent=1, sort_keys=True)
    return set(known[architecture])


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

    return {
        type(m).__name__ for _, m in meta_layer_modules(config) if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"
    }


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
