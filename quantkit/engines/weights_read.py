"""The weight bytes one batch-1 decode step of a loaded engine reads (benchmark/bandwidth.py's
achieved bandwidth), as each engine counts them: every weight once, the input embedding table one
row (a lookup) unless it is tied to the output projection, which reads it all. Each engine's entry
names its counter (``EngineEntry.bytes_per_token``), which takes the loaded engine."""

from quantkit.engines.hf import QUANT_METADATA


def gguf_file_bytes(engine) -> dict:
    """llama.cpp: from the tensors of the GGUF file it loaded."""
    return gguf_decode_bytes(engine.file)


def torch_model_bytes(engine) -> dict:
    """transformers: from the parameters of the model as loaded (dense when it dequantized)."""
    return torch_decode_bytes(engine.model)


def gguf_decode_bytes(path) -> dict:
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(path).tensors}
    total = sum(int(t.n_bytes) for t in tensors.values())
    embd = tensors.get("token_embd.weight")
    tied = "output.weight" not in tensors  # llama.cpp then reuses token_embd as the output projection
    counted = total
    if embd is not None and not tied:
        rows = int(embd.n_elements) // int(embd.shape[0])
        counted = total - int(embd.n_bytes) + int(embd.n_bytes) // rows
    return {
        "bytes": counted,
        "embedding_bytes": int(embd.n_bytes) if embd is not None else None,
        "tied": tied,
        "counted": "GGUF tensors",
    }


def torch_decode_bytes(model) -> dict:
    def nbytes(t):
        return t.numel() * t.element_size()

    seen, total = set(), 0
    for module in model.modules():
        # A decompressed compressed-tensors Linear keeps its scales and zero points beside the
        # dense weight; its matmul reads only the weight.
        dense = not hasattr(module, "weight_packed")
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, t in tensors:
            if dense and name in QUANT_METADATA or t.data_ptr() in seen:  # tied weights: one storage
                continue
            seen.add(t.data_ptr())
            total += nbytes(t)
    embd = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == embd.data_ptr()
    counted = total if tied else total - nbytes(embd) + nbytes(embd) // embd.shape[0]
    return {"bytes": counted, "embedding_bytes": nbytes(embd), "tied": tied, "counted": "model parameters"}
