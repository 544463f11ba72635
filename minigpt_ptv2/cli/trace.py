"""`trace`: walk a batch through a model with random weights and print every named shape.

    python -m minigpt_ptv2 trace --method deep --B 16 --N 128 --P 20 --config bert-base

prints the deep-prompt walk of lesson 07 (inject [16, 20, 768] + [16, 128, 768] -> [16, 148, 768] -> slice ->
[16, 128, 768]); `--method prefix` prints its K/V counterpart ([16, 12, 20, 64] +
[16, 12, 128, 64] -> [16, 12, 148, 64]). Shapes do not depend on the weights, so the model
is built from the named preset with random weights: nothing is downloaded.
"""
from __future__ import annotations

from ..catalog import METHODS, POSITIONS, PRESETS
from ..errors import InputError
from ._shared import batch_size, int_range, non_negative_int, prompt_length, seed

NAME = "trace"
HELP = "print the shape of every named tensor as a batch flows through a model and prompt method"
DESCRIPTION = (__doc__ or "").split("\n\n")[0].strip() + (
    " Shapes are spelled with the notation letters of lesson 01 (B, N, P, D, L, H, d, P+N).")

DEFAULT_CONFIG = {"encoder": "bert-base", "decoder": "gpt2"}
MEMORY_LIMIT = 2**31  # bytes of one layer's attention weights a trace may allocate (2 GiB)


def add_arguments(p):
    p.add_argument("--method", default="prefix", choices=["none", *sorted(METHODS)],
                   help="prompt method to attach ('none' = the plain model)")
    p.add_argument("--config", choices=sorted(PRESETS), default=None,
                   help="model preset (default: bert-base, or gpt2 with --model decoder)")
    p.add_argument("--model", choices=["encoder", "decoder"], default=None,
                   help="model kind (default: the kind of --config)")
    p.add_argument("--B", type=batch_size, default=16, help="batch size")
    p.add_argument("--N", type=int_range(1, 65_536), default=None,
                   help="real tokens per sequence (default: 128, or as many as the model's positions hold)")
    p.add_argument("--P", type=prompt_length, default=20, help="prompt / prefix length")
    p.add_argument("--num-layers", type=int_range(1, 1000), default=None,
                   help="override the preset's L (fewer layers run faster; shapes per layer are the same)")
    p.add_argument("--layers", default=None,
                   help="layers to show, e.g. '0', '0,-1' or '0-2' (default: all)")
    p.add_argument("--pad", type=non_negative_int, default=0,
                   help="pad the last PAD tokens of the last row, so the attention mask shows up")
    p.add_argument("--positions", choices=POSITIONS, default="real",
                   help="position policy of the prompt: real tokens at 0..N-1, or P..P+N-1 as HF/PEFT do "
                        "(lesson 13, pitfall 1)")
    p.add_argument("--fused", action="store_true",
                   help="use the fused attention path (no scores/probs rows, faster)")
    p.add_argument("--seed", type=seed, default=0, help="random seed for weights and token ids")


def kind_of(cfg) -> str:
    """"decoder" for a causal architecture, else "encoder" (the registry's model class says)."""
    from ..models import architecture
    return "decoder" if architecture(cfg.model_type).causal else "encoder"


def resolve_config(config: str | None, model: str | None):
    """--config and --model together: either may be omitted, but they must agree."""
    from ..models.presets import preset
    if config is None:
        return preset(DEFAULT_CONFIG[model or "encoder"])
    cfg = preset(config)
    kind = kind_of(cfg)
    if model is not None and model != kind:
        raise InputError(f"--config {config} is {_a(kind)} preset but --model {model} was asked for; "
                         f"drop --model or choose {_a(model)} preset ({', '.join(_presets(model))})")
    return cfg


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "encoder" else f"a {kind}"


def _presets(kind: str) -> list[str]:
    from ..models.presets import PRESETS
    return [name for name, cfg in sorted(PRESETS.items()) if kind_of(cfg) == kind]


def parse_layers(spec: str | None, L: int) -> tuple[int, ...] | None:
    """'0,-1' / '0-2' / '3' -> layer indices in [0, L); None -> all layers."""
    if spec is None:
        return None
    out = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                cut = part.index("-", 1)
                lo, hi = int(part[:cut]), int(part[cut + 1:])
                picked = list(range(lo % L if lo < 0 else lo, (hi % L if hi < 0 else hi) + 1))
            else:
                i = int(part)
                picked = [i + L if i < 0 else i]
        except ValueError:
            raise InputError(f"--layers {spec!r}: expected indices like '0', '0,-1' or '0-2'") from None
        bad = [i for i in picked if not 0 <= i < L]
        if bad or not picked:
            raise InputError(f"--layers {spec!r}: layer {bad[0] if bad else part} is outside 0..{L - 1} (L={L})")
        out.extend(picked)
    return tuple(sorted(set(out)))


def build(cfg, method: str, P: int, positions: str):
    """A model with random weights for `cfg`, in eval mode, with `method` attached."""
    from ..models import build as build_model
    from ..prompts import make_method
    model = build_model(cfg).eval()
    if method != "none":
        model.attach(make_method(method, cfg, P, positions=positions).eval())
    return model


def run_trace(cfg, method="prefix", B=16, N=128, P=20, layers=None, pad=0, positions="real",
              fused=False, seed=0):
    """Trace one forward pass; returns the ShapeTrace (rows, table, walk)."""
    import torch

    from ..trace import ShapeTrace, dims_for
    for name, value in (("--B", B), ("--N", N), ("--P", P)):
        if value <= 0:
            raise InputError(f"{name} must be a positive integer, got {value}")
    if not 0 <= pad < N:
        raise InputError(f"--pad must be in [0, N={N}), got {pad}")
    keys = N + (P if method != "none" else 0)
    need = B * cfg.num_attention_heads * N * keys * 4  # one layer's attention weights, float32
    if need > MEMORY_LIMIT:
        raise InputError(f"--B {B} --N {N}{f' --P {P}' if keys > N else ''}: one layer's attention weights alone "
                         f"would take {need / 2**30:.1f} GiB (B x H x N x (P+N) floats, H={cfg.num_attention_heads}); "
                         f"the shapes' letters read the same at any size, so trace a smaller --B or --N")
    torch.manual_seed(seed)
    model = build(cfg, method, P, positions)
    ids = torch.randint(0, cfg.vocab_size, (B, N))  # [B, N]
    mask = torch.ones(B, N, dtype=torch.long)  # [B, N]
    if pad:
        mask[-1, N - pad:] = 0
    dims = dims_for(cfg, B=B, N=N, P=P if method != "none" else None)
    with torch.inference_mode(), ShapeTrace(dims=dims, layers=layers) as tr:
        model(ids, attention_mask=mask, output_attentions=not fused)
    return tr


def run(args) -> int:
    cfg = resolve_config(args.config, args.model)
    if args.num_layers is not None:
        if args.num_layers <= 0:
            raise InputError(f"--num-layers must be positive, got {args.num_layers}")
        cfg = cfg.replace(num_hidden_layers=args.num_layers)
    L = cfg.num_hidden_layers
    layers = parse_layers(args.layers, L)
    shift = args.P if args.positions == "shifted" and args.method != "none" else 0
    room = cfg.max_position_embeddings - shift  # real tokens the position table holds
    N = min(128, room) if args.N is None else args.N
    if N > room:
        raise InputError(f"--N {N}: the model has {cfg.max_position_embeddings} positions"
                         f"{f', {shift} of them taken by the prompt under --positions shifted' if shift else ''}: "
                         f"give --N {room} or less")
    tr = run_trace(cfg, args.method, args.B, N, args.P, layers, args.pad, args.positions,
                   args.fused, args.seed)
    kind = kind_of(cfg)
    name = args.config or DEFAULT_CONFIG[args.model or "encoder"]
    letters = " ".join(f"{k}={v}" for k, v in tr.dims.items() if k in ("B", "N", "P", "D", "L", "H", "H_kv", "d"))
    print(f"{name} ({kind}, random weights), method {args.method}: {letters}")
    print(tr.table())
    if args.method != "none":
        print()
        print(tr.walk((layers or (0,))[0]))
    return 0
