"""A stand-in for vLLM's python in the tests (no vLLM is installed for `make test`): invoked as
``<fake python> -m vllm.entrypoints.openai.api_server MODEL --served-model-name ... --port ...``,
it records its command line (to $FAKE_VLLM_ARGS) and serves MODEL with quantkit's own
in-process OpenAI server on that loopback port: /health, /v1/models, /v1/chat/completions
(streamed or not), /metrics, the API key. What quantkit does around vLLM is then tested for real."""

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    if argv[:2] != ["-m", "vllm.entrypoints.openai.api_server"]:
        sys.exit(f"fake vllm: expected -m vllm.entrypoints.openai.api_server, got {argv[:2]}")
    parser = argparse.ArgumentParser()
    for flag in (
        "--model",
        "--served-model-name",
        "--host",
        "--port",
        "--max-num-seqs",
        "--max-model-len",
        "--dtype",
        "--api-key",
    ):
        parser.add_argument(flag)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--pipeline-parallel-size", type=int, default=1)
    parser.add_argument("--enforce-eager", action="store_true")
    args = parser.parse_args(argv[2:])
    if os.environ.get("FAKE_VLLM_ARGS"):
        Path(os.environ["FAKE_VLLM_ARGS"]).write_text(json.dumps({"argv": argv, "env": dict(os.environ)}))
    if args.tensor_parallel_size * args.pipeline_parallel_size > 1:
        sys.exit("ValueError: fake vllm: this machine has no GPUs for tensor/pipeline parallelism")
    os.environ.pop("QUANTKIT_API_KEY", None)  # vLLM reads its --api-key flag only
    from quantkit.engines import EngineOptions
    from quantkit.serve.app import ServeOptions, serve

    options = ServeOptions(
        host=args.host,
        port=int(args.port),
        api_key=args.api_key,
        model_name=args.served_model_name,
        n_ctx=int(args.max_model_len),
        parallel=int(args.max_num_seqs),
        max_tokens_limit=int(args.max_model_len),
    )
    serve(args.model, options, EngineOptions(threads=1, n_ctx=int(args.max_model_len)), on_ready=lambda url: None)


if __name__ == "__main__":
    main(sys.argv[1:])
