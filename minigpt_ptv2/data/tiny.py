"""A tiny embedded sentiment set: the demo's offline default when SST-2 is not on disk.

Written for this project in SST-2's style (lower-cased, space-tokenised). Too small to measure
anything; it only lets the guided demo run end to end anywhere.
"""
from __future__ import annotations

from .sst2 import Example

_POSITIVE = [
    "a warm , funny and moving film", "the cast is terrific and the script sparkles",
    "one of the best films of the year", "a delightful , clever surprise", "beautifully shot and deeply felt",
    "an absolute masterpiece", "smart , tender and often hilarious", "i loved every minute of it",
    "a joyous celebration of life", "the performances are wonderful", "gripping from start to finish",
    "a charming and thoughtful story", "fresh , bold and entertaining", "the best kind of crowd pleaser",
    "a moving portrait of friendship", "brilliantly acted and directed", "it 's a pleasure to watch",
    "witty dialogue and a big heart", "a rare gem", "exciting , inventive and fun",
]
_NEGATIVE = [
    "a dull , lifeless mess", "the plot makes no sense at all", "one of the worst films of the year",
    "tedious and far too long", "the acting is wooden and the jokes fall flat", "a boring waste of time",
    "clumsy , predictable and loud", "i wanted to leave after ten minutes", "a tired collection of cliches",
    "the script is lazy and the pacing is awful", "painfully slow and utterly forgettable",
    "a confused and joyless film", "nothing works in this movie", "bland characters and a silly story",
    "an ugly , cynical bore", "the ending is a complete letdown", "it never comes to life",
    "stale jokes and flat performances", "a mess from beginning to end", "dreary , dumb and dull",
]


def tiny_sentiment(split: str = "train") -> list[Example]:
    """14 positive + 14 negative rows for "train", the other 6 + 6 for "dev", interleaved."""
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', got {split!r}")
    part = slice(0, 14) if split == "train" else slice(14, None)
    pairs = zip(_POSITIVE[part], _NEGATIVE[part])
    return [e for p, n in pairs for e in (Example(p, 1), Example(n, 0))]
