"""`figures`: regenerate every attention figure in one command.

    python -m minigpt_ptv2 figures [--out figures] [--quick]

On the shipped pretrained MiniLM, with SST-2 sentences from the data folder when it is found
(else from the SST-2 sample shipped in the package), it trains a K/V prefix (P-Tuning v2) and a deep hidden-state
prompt briefly on SST-2 and draws:

    prefix_mass_kv.png              layer x head: attention mass real tokens put on the trained prefix
    attention_kv_heads.png          one layer, four heads: full matrices, [p0..p{P-1} | WordPiece tokens]
    prompt_styles_before_after.png  hidden-state prompt vs K/V prefix, at initialisation vs trained
    decoder_causal_prefix.png       a GPT-2-shaped decoder: prefix columns fully visible, causal triangle

and the pictures of the ideas (viz/diagrams.py, no training): deep_styles.png, bridge.png,
kv_cache.png, grouped_heads.png.

--quick uses tiny sizes (seconds, for tests); the full run takes a couple of minutes on a CPU.
--out (figures unless given) is checked before anything is trained: a folder that holds anything
is refused unless --overwrite, which replaces it whole once every figure is drawn.
Only the standard library is imported at module level, so `figures --help` answers without torch.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ._shared import add_overwrite, seed as seed_type

if TYPE_CHECKING:  # annotations only: --help stays torch-free
    import torch

NAME = "figures"
HELP = "regenerate every attention figure (briefly trains a K/V prefix and a deep prompt on SST-2)"
DESCRIPTION = (__doc__ or "").split("\n\n")[0].strip() + (
    " Trains a K/V prefix and a deep prompt briefly on SST-2 and plots where the attention goes. --out (figures "
    "unless given) must be new or empty: a folder that holds anything is refused unless --overwrite, which "
    "replaces it whole once the figures are drawn.")

# Sizes of the two brief training runs and of the sentences the figures average over.
SIZES = {
    "full": dict(P=8, train=768, epochs=1, batch=16, lr=3e-2, dev=64),
    "quick": dict(P=4, train=8, epochs=1, batch=8, lr=3e-2, dev=4),
}
FILES = ("prefix_mass_kv.png", "attention_kv_heads.png", "prompt_styles_before_after.png",
         "decoder_causal_prefix.png", "deep_styles.png", "bridge.png", "kv_cache.png", "grouped_heads.png")


def add_arguments(p):
    p.add_argument("--out", default="figures", help="folder the PNGs are written to (new or empty)")
    add_overwrite(p, "the figures", "figures")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds instead of minutes")
    p.add_argument("--data-dir", default=None,
                   help="folder holding sst2/; None: found automatically, else the SST-2 sample in the package")
    p.add_argument("--model-dir", default=None, help="HF-format BERT folder; None: the shipped MiniLM")
    p.add_argument("--seed", type=seed_type, default=0, help="seed for prompt initialisation and data order")
    p.add_argument("--no-progress", action="store_true", help="no progress bars for the two brief trainings")


def train_briefly(encoder, tok, method: str, P: int, train, dev_batch, size: dict, seed: int,
                  show_progress: bool = False):
    """Attach `method` to the frozen encoder, record its attention on `dev_batch` at
    initialisation, train prompt + head for a few steps, record again.

    Returns (maps_before, maps_after, task_model).
    """
    from ..training import TrainConfig, build_task_model, fit, set_seed
    from ..training.tasks import get_task
    from ..viz import attention_maps
    set_seed(seed)
    model = build_task_model("sst2", method, P, encoder=encoder)
    model.eval()
    before = attention_maps(encoder, dev_batch)
    loader = get_task("sst2").batches(train, tok, batch_size=size["batch"], shuffle=True, seed=seed,
                                      max_length=64)
    fit(model, loader, TrainConfig(epochs=size["epochs"], lr=size["lr"], seed=seed, progress=show_progress),
        task="sst2")
    model.eval()
    return before, attention_maps(encoder, dev_batch), model


def dev_accuracy(model, dev_batch, labels) -> float:
    import torch
    with torch.no_grad():
        logits = model(dev_batch["input_ids"], dev_batch["attention_mask"], task="sst2")  # [B, 2]
    return float((logits.argmax(-1) == labels).float().mean())


def pick_sentence(mask: torch.Tensor, lo: int = 8, hi: int = 14) -> int:
    """Index of the first row with lo..hi real tokens (readable labels), else the shortest."""
    lengths = mask.sum(1)  # [B]
    ok = ((lengths >= lo) & (lengths <= hi)).nonzero()
    return int(ok[0]) if len(ok) else int(lengths.argmin())


def pick_heads(mass_row: torch.Tensor, k: int = 4) -> list[int]:
    """The k/2 heads that attend to the prefix most and the k/2 that attend least, in that order."""
    order = mass_row.argsort(descending=True).tolist()
    k = min(k, len(order))
    top, bottom = order[: (k + 1) // 2], order[len(order) - k // 2:]
    return top + bottom


def sink_share(mats, P: int, tokens) -> float:
    """Share of the last two heads' attention (the ones using the prefix least) that goes to the
    [CLS] and [SEP] key columns: BERT's 'attention sink', where a head looks when it has nothing
    better to do."""
    cols = [P + i for i, t in enumerate(tokens) if t in ("[CLS]", "[SEP]")]
    return float(mats[-2:, :, cols].sum(-1).mean()) if cols else 0.0


def decoder_causal_data(P: int = 4, N: int = 8, seed: int = 0):
    """A random GPT-2-shaped decoder (gpt2-tiny, GPT-2's N(0, 0.02) init) with a K/V prefix:
    returns (maps, decoder). Real token i sees every prefix entry and real tokens 0..i."""
    import torch
    from ..models.presets import preset
    from ..models.gpt2 import GPT2Decoder
    from ..prompts import KVPrefix
    from ..viz import attention_maps
    torch.manual_seed(seed)
    cfg = preset("gpt2-tiny")
    model = GPT2Decoder(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
        model.attach(KVPrefix(cfg, P, init_std=1.0).eval())
        ids = torch.randint(1, cfg.vocab_size, (1, N))  # [1, N]
        return attention_maps(model, ids), model


def make_figures(out="figures", quick: bool = False, data_dir=None, model_dir=None, seed: int = 0, show_progress=False,
                 log=print, overwrite: bool = False) -> dict:
    """Train, extract, plot. Returns {file name: path} for the PNGs written into `out`. `out` is
    checked before anything is trained (outdir.py): refused if it holds anything unless
    overwrite, which replaces it whole once every figure is drawn; never a folder it reads."""
    from .. import outdir
    start = time.perf_counter()
    reads = outdir.inputs(model_dir, data_dir)
    with outdir.writing(out, "--out", reads, overwrite) as stage:
        names = _draw(stage, quick, data_dir, reads["--model-dir"], seed, show_progress, log)
    written = {name: Path(out) / name for name in names}
    for path in written.values():
        log(f"  wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    log(f"done in {time.perf_counter() - start:.0f} s")
    return written


def _draw(out: Path, quick: bool, data_dir, model_dir, seed: int, show_progress: bool, log) -> list:
    """The two brief trainings, the four attention figures and the diagrams, written into `out`;
    returns the file names."""
    import torch
    from ..data import WordPiece
    from ..models.bert import BertEncoder
    from ..viz import key_labels
    from ..viz.plots import plot_attention_heads, plot_prefix_mass
    size = SIZES["quick" if quick else "full"]
    encoder = BertEncoder.from_pretrained(model_dir).eval()
    tok = WordPiece.from_model_dir(model_dir)
    from ..data import sst2_or_sample
    train, dev, source = sst2_or_sample(data_dir, size["train"], size["dev"])
    dev_batch = tok.encode([text for text, _ in dev], max_length=64)  # [B, N] each
    dev_labels = torch.tensor([label for _, label in dev])  # [B]
    P = size["P"]
    log(f"figures: MiniLM (L={encoder.config.num_hidden_layers}, H={encoder.config.num_attention_heads}), "
        f"P={P}, {len(train)} training / {len(dev)} dev sentences ({source})")

    runs = {}
    for method, label in (("deep", "hidden-state prompt (deep)"), ("prefix", "K/V prefix")):
        t0 = time.perf_counter()
        before, after, model = train_briefly(encoder, tok, method, P, train, dev_batch, size, seed, show_progress)
        acc = dev_accuracy(model, dev_batch, dev_labels)
        runs[method] = (label, before, after, acc)
        encoder.detach_prompt()
        log(f"  trained {label}: {len(train)} sentences x {size['epochs']} epoch, dev accuracy on "
            f"{len(dev)} sentences {acc:.2f} ({time.perf_counter() - t0:.0f} s)")

    written = {}
    label, _, kv_after, kv_acc = runs["prefix"]
    mass = kv_after.mass()  # [L, H]
    written[FILES[0]], _ = plot_prefix_mass(
        {f"trained K/V prefix, P={P}": mass}, out / FILES[0],
        title=f"Attention mass real tokens put on the prefix ({len(dev)} dev sentences, {source})")

    layer = int(mass.mean(1).argmax())  # the layer leaning on the prefix most
    row = pick_sentence(kv_after.query_mask)
    heads = pick_heads(mass[layer])
    ids = dev_batch["input_ids"][row][kv_after.query_mask[row]]
    tokens = tok.tokens(ids)
    mats = kv_after.matrix(layer, row, heads)  # [4, n, P+n]
    titles = [f"head {h}: {100 * float(mass[layer, h]):.0f}% on the prefix ({role})" for h, role in
              zip(heads, ["uses it most", "uses it 2nd most", "uses it 2nd least", "uses it least"])]
    sink = sink_share(mats, P, tokens)  # [CLS] and [SEP] columns of the least prefix-using heads
    log(f"  layer {layer}: the two heads using the prefix least put {100 * sink:.0f}% of their attention on "
        f"[CLS] and [SEP]")
    written[FILES[1]], _ = plot_attention_heads(
        mats, P, key_labels(P, tokens), tokens, out / FILES[1], heads, head_titles=titles,
        title=f"Layer {layer}, trained K/V prefix, one dev sentence: prefix keys p0..p{P - 1} left of the "
              f"white line.\nHeads that do not read the prefix park {100 * sink:.0f}% of their attention on "
              f"[CLS]/[SEP] (an attention sink: a place to look when nothing else matters)")

    panels = {}
    for method in ("deep", "prefix"):
        label, before, after, acc = runs[method]
        panels[f"{label}, at initialisation"] = before.mass()
        panels[f"{label}, trained (dev acc {acc:.2f})"] = after.mass()
    written[FILES[2]], _ = plot_prefix_mass(
        panels, out / FILES[2],
        title=f"Mass on the P={P} prompt positions, same {len(dev)} sentences, same frozen MiniLM")

    maps, _ = decoder_causal_data(seed=seed)
    n, Pd = maps.query_mask.shape[1], maps.P
    names = [f"t{i}" for i in range(n)]
    later = torch.zeros(n, Pd + n, dtype=torch.bool)  # [N, P+N]: keys a query may not see
    later[:, Pd:] = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    mats = maps.matrix(0, 0)  # [H, N, P+N]
    written[FILES[3]], _ = plot_attention_heads(
        mats, Pd, key_labels(Pd, names), names, out / FILES[3], vmax=float(mats.max()), hidden=later,
        title=f"GPT-2 decoder (random gpt2-tiny) with a K/V prefix, layer 0: every token sees "
              f"p0..p{Pd - 1}, then itself and earlier tokens only")

    from ..viz.diagrams import save_diagrams
    return list(written) + [path.name for path in save_diagrams(out)]


def run(args) -> int:
    make_figures(args.out, args.quick, args.data_dir, args.model_dir, args.seed, show_progress=not args.no_progress,
                 overwrite=args.overwrite)
    return 0
