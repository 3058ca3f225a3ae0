"""GGUF K-quants with and without llama.cpp's importance matrix, side by side in one run.

    python benchmarks/imatrix.py [--types Q4_K_M Q3_K_M] [--model bundled:smollm2-135m-instruct]
                                 [--calib-samples 64] [--calib-seq-len 256] [--eval-tokens 1024]

What ``quantkit quantize --method gguf`` does, done once and shared by both sides so only the
importance matrix differs: the converter's F16 file, ``llama-imatrix`` over quantkit's calibration
set (the AWQ samples and chat formatting), then ``llama-quantize`` of each type with and without
``--imatrix``. Every file is then measured against the HF base with quantkit's quality evaluation
(KL divergence on llama.cpp's definition, top-1 agreement, PPL ratio) on the same evaluation
tokens; prints a Markdown table (docs/gguf.md holds a measured one).
"""

import argparse
import tempfile
import time
from pathlib import Path


def main():
    from quantkit.benchmark.quality import QualityOptions, evaluate
    from quantkit.engines import EngineOptions, load_engine
    from quantkit.hub.model_ref import resolve_model
    from quantkit.quantization.gguf.binaries import quantize_file
    from quantkit.quantization.gguf.method import GgufOptions, make_imatrix
    from quantkit.quantization.gguf.tools import convert, converter_view, find_converter

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--types", nargs="+", default=["Q4_K_M", "Q3_K_M"])
    parser.add_argument("--calib-samples", type=int, default=None)
    parser.add_argument("--calib-seq-len", type=int, default=None)
    parser.add_argument("--eval-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    base = resolve_model(args.model)
    quality = QualityOptions(max_tokens=args.eval_tokens)
    engine_options = EngineOptions(threads=args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "view").mkdir()
        source, _ = converter_view(base, tmp / "view")
        f16 = tmp / "model-F16.gguf"
        started = time.perf_counter()
        convert(find_converter(), source, f16, "f16", echo=False)
        convert_s = time.perf_counter() - started
        started = time.perf_counter()
        imatrix, record = make_imatrix(
            base, f16, tmp, GgufOptions(calib_samples=args.calib_samples or 64, calib_seq_len=args.calib_seq_len or 256)
        )
        imatrix_s = time.perf_counter() - started
        for gguf_type in args.types:
            for use in (False, True):
                out = tmp / f"model-{gguf_type}-{'imatrix' if use else 'plain'}.gguf"
                fallbacks = quantize_file(f16, out, gguf_type, imatrix=imatrix if use else None, echo=False)
                engine = load_engine(out, engine_options)
                try:
                    result = evaluate(engine, base, quality, engine_options)
                    bpw = out.stat().st_size * 8 / engine.n_params
                finally:
                    engine.close()
                rows.append((gguf_type, use, bpw, len(fallbacks), result))
    calib = record["calibration"]
    print(
        f"\n{args.model}: {rows[0][4].tokens_scored} scored tokens, base = the HF checkpoint; imatrix from "
        f"{calib['samples']} samples x {calib['seq_len']} tokens ({calib['chat_samples']} chat-formatted; "
        f"{record['tokens']} tokens, {record['chunks']} chunks of {record['ctx']}); "
        f"F16 conversion {convert_s:.0f} s, llama-imatrix {imatrix_s:.0f} s\n"
    )
    print("| type | imatrix | bpw (file) | fallback tensors | KLD mean | KLD p99 | KLD max | top-1 | PPL ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for gguf_type, use, bpw, n_fallback, r in rows:
        print(
            f"| {gguf_type} | {'yes' if use else 'no'} | {bpw:.2f} | {n_fallback} | {r.kld_mean:.4f} | {r.kld_p99:.3f} | "
            f"{r.kld_max:.3f} | {100 * r.top1_agreement:.1f} % | {r.ppl_ratio:.3f} |"
        )


if __name__ == "__main__":
    main()
