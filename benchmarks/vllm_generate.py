"""Runs inside vLLM's own venv (not quantkit's): load one model folder in ``vllm.LLM`` and generate
greedily from given prompt token ids, with the top-k logprobs of every generated token.

    <vllm python> benchmarks/vllm_generate.py REQUEST.json RESULT.json

REQUEST: {"model", "prompts": [[ids]], "max_tokens", "logprobs", "dtype", "max_model_len"}.
RESULT: {"vllm", "quantization", "outputs": [{"ids", "top": [{id: logprob}]}]} or {"vllm", "error"}.
Only the standard library and vLLM: quantkit is not installed in that venv."""

import json
import os
import sys


def one_line(exc: BaseException) -> str:
    """vLLM's own message in one line: a pydantic validation error's 'Value error, ...' line, else
    the exception's first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "Value error," in line:
            return line.split("Value error,", 1)[1].split(" [type=")[0].strip()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]


def main(request_path: str, result_path: str) -> int:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's CPU default (4) is more than a test box has
    request = json.loads(open(request_path).read())
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    result: dict = {"vllm": vllm.__version__}
    try:
        llm = LLM(
            model=request["model"],
            dtype=request.get("dtype", "auto"),
            max_model_len=request.get("max_model_len", 2048),
            enforce_eager=True,  # no graph capture: loads in ~25 s instead of ~2 min on a CPU
            seed=0,
        )
        config = llm.llm_engine.model_config
        result["quantization"] = config.quantization
        result["dtype"] = str(config.dtype).removeprefix("torch.")
        params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], logprobs=request["logprobs"], ignore_eos=True)
        outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]], params, use_tqdm=False)
        result["outputs"] = [
            {
                "ids": list(o.outputs[0].token_ids),
                "top": [{str(t): lp.logprob for t, lp in step.items()} for step in o.outputs[0].logprobs or []],
            }
            for o in outputs
        ]
    except Exception as exc:  # a refusal is a result: the parent records vLLM's message
        result["error"] = one_line(exc)
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0 if "error" not in result else 2


if __name__ == "__main__":  # vLLM's CPU engine starts worker processes that import __main__
    sys.exit(main(sys.argv[1], sys.argv[2]))
