"""fp32 compute over 16-bit weights, one module at a time: a bf16/fp16 checkpoint keeps its own
weights in RAM, and each module that owns parameters (each Linear, each norm, lm_head) gets an
fp32 copy of them just before its forward, dropped right after; an embedding's rows are cast after
the lookup. The logits equal those of
the whole model loaded in fp32 (tests/test_upcast.py), at 1x the checkpoint's RAM instead of 3x
(16-bit file pages + an fp32 copy).

Standalone on purpose (torch only, imported inside the function): verify_runtime.py, which never
imports quantkit, loads this file by its path.
"""


def upcast_per_module(model, dtype=None) -> int:
    """Hook every module of ``model`` that holds 16-bit floating parameters or buffers of its own
    so that it computes in ``dtype`` (default float32). Returns the number of modules hooked."""
    import torch

    dtype = dtype or torch.float32
    hooked = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            # A lookup is exact in any dtype: cast the rows it returns, not the whole table.
            module.register_forward_hook(lambda _m, _args, out: out.to(dtype))
            hooked += 1
            continue
        names = [n for n, t in module.named_parameters(recurse=False) if t.dtype in (torch.bfloat16, torch.float16)]
        buffers = [n for n, t in module.named_buffers(recurse=False) if t.dtype in (torch.bfloat16, torch.float16)]
        if not names and not buffers:
            continue
        module.register_forward_pre_hook(_swap_in(names, buffers, dtype))
        module.register_forward_hook(_swap_out(names, buffers), always_call=True)
        hooked += 1
    return hooked


def _swap_in(names, buffers, dtype):
    import torch

    def hook(module, args):
        kept = {}
        with torch.inference_mode(False), torch.no_grad():  # plain tensors: they go back into the Parameters
            for name in names:
                param = module._parameters[name]
                kept[name] = param.data
                param.data = param.data.to(dtype)
            for name in buffers:
                kept[name] = module._buffers[name]
                module._buffers[name] = kept[name].to(dtype)
        module._upcast_kept = kept

    return hook


def _swap_out(names, buffers):
    def hook(module, args, output):
        kept = module.__dict__.pop("_upcast_kept", None)
        if kept is None:
            return
        for name in names:
            module._parameters[name].data = kept[name]  # the 16-bit original, not a cast back
        for name in buffers:
            module._buffers[name] = kept[name]

    return hook
