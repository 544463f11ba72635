"""`params`: how many parameters each prompt method trains, for any config."""
from __future__ import annotations

from ..catalog import METHODS, PRESETS
from ._shared import prompt_length

NAME = "params"
HELP = "trainable parameters and % of the backbone for every prompt method"


def add_arguments(p):
    p.add_argument("--config", default="bert-base", choices=sorted(PRESETS), help="model config")
    p.add_argument("--P", type=prompt_length, default=20, help="prompt / prefix length")
    p.add_argument("--methods", nargs="*", choices=sorted(METHODS), help="subset of methods")


def run(args) -> int:
    from ..models.presets import preset
    from ..prompts import format_report, parameter_report
    cfg = preset(args.config)
    dims = cfg.dims()
    shown = ["D", "L", "H"] + ["H_kv"] * (dims["H_kv"] != dims["H"]) + ["d"] * (dims["d"] * dims["H"] != dims["D"])
    letters = " ".join(f"{k}={dims[k]}" for k in shown)
    print(f"{args.config}: {letters}, P={args.P}")
    print(format_report(parameter_report(cfg, args.P, args.methods)))
    return 0
