"""Time per stage of a recipe run (default: the SmolLM2 recipe, every method, on this CPU).

    python benchmarks/pipeline.py [RECIPE] [--out DIR] [--only NAME ...] [--force]

Runs ``quantkit.pipeline.run.run`` (resumable: pass --force to time a cold run into an existing
folder) and prints the wall time of the model stage and of each artifact's quantize and bench.
"""

import argparse
import json
import time
from pathlib import Path

from quantkit.pipeline.recipe import load_recipe
from quantkit.pipeline.run import run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default="smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pipeline"))
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--only", action="append", help="time only this artifact (repeatable)")
    args = parser.parse_args()
    started = time.time()
    summary = run(load_recipe(args.recipe), args.out, only=args.only, force=args.force)
    total = time.time() - started
    model = (
        json.loads((summary.out_dir / "stages" / "model.json").read_text())
        if (summary.out_dir / "stages" / "model.json").is_file()
        else {}
    )
    print(f"{'stage':<28}{'seconds':>10}  status")
    print(f"{'model':<28}{model.get('seconds', 0):>10.1f}  {'ok' if model else 'failed'}")
    for a in summary.artifacts:
        for stage in ("quantize", "bench"):
            seconds = a.seconds.get(stage)
            shown = f"{seconds:>10.1f}" if seconds is not None else f"{'-':>10}"
            print(f"{a.name + ' ' + stage:<28}{shown}  {a.stages.get(stage, '-')}")
    print(f"{'total (this run)':<28}{total:>10.1f}  exit {summary.exit_code}")


if __name__ == "__main__":
    main()
