"""Looking at attention on prompt and prefix positions: data extraction, then plots.

    maps = attention_maps(model, batch)          # every layer's probabilities + masks
    maps.mass()                                  # [L, H] mass real tokens put on the prompt
    plot_prefix_mass({"K/V prefix": maps.mass()}, "mass.png")

`attention_data` needs only torch; `plots` imports matplotlib when first used. `save_figure`
writes a lesson's figure to the folder named by MINIGPT_PTV2_FIGURES (and shows it in a notebook).
"""
from .attention_data import AttentionMaps, attention_maps, key_labels, prefix_mass, token_mass
from .save import figures_dir, save_figure

__all__ = ["AttentionMaps", "attention_maps", "prefix_mass", "token_mass", "key_labels",
           "plot_prefix_mass", "plot_attention_heads", "save_figure", "figures_dir"]


def __getattr__(name):  # plots on demand, so the data side never pulls in matplotlib
    if name in ("plot_prefix_mass", "plot_attention_heads"):
        from . import plots
        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
