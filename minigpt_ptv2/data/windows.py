"""Sliding windows: token tasks read a text of any length, never cutting words off.

A model reads at most `max_length` tokens at once: [CLS], max_length - 2 sub-tokens ("room"),
[SEP]; its position table caps max_length too. A longer text is read in overlapping windows, as
HuggingFace's token-classification pipeline does with `stride`: consecutive windows share
`stride` sub-tokens, and each sub-token's prediction is taken from the window in which it has
the most context, i.e. lies farthest from a cut edge (the text's own start and end are not cuts).

    sub-tokens        0 ..................................................... n-1
    window 0    [CLS] 0 .............. room-1 [SEP]
    window 1                  [CLS] step ............ step+room-1 [SEP]     step = room - stride
    window 2                                [CLS] 2*step ........... n-1 [SEP]

With the default stride (half the room), every kept prediction saw at least a quarter of a
window of context on each side, except near the text's own ends. A text that fits in one window
is read exactly as it would be unwindowed.
"""
from __future__ import annotations

from ..errors import InputError


def default_stride(room: int) -> int:
    return room // 2


def check_stride(stride, room: int, name: str = "stride") -> int:
    """Consecutive windows share 0..room-1 sub-tokens: a window must move on by at least one."""
    if isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride < room:
        raise InputError(f"{name} must be an int in [0, {room}) (sub-tokens shared by consecutive windows, "
                         f"fewer than the max_length - 2 = {room} a window holds), got {stride!r}")
    return stride


def spans(n: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) spans of at most `room` sub-tokens covering 0..n-1, consecutive spans sharing
    `stride` sub-tokens (the last may be shorter). n = 0 gives one empty span."""
    check_stride(stride, room)
    out, start = [], 0
    while True:
        end = min(start + room, n)
        out.append((start, end))
        if end >= n:
            return out
        start += room - stride


def owners(n: int, windows: list[tuple[int, int]]) -> list[int]:
    """For each of the n sub-tokens, the index of the window whose prediction is kept: the one
    where its distance to the nearer cut edge is largest (ties: the earlier window)."""
    best, score = [0] * n, [-1] * n
    for k, (start, end) in enumerate(windows):
        for t in range(start, end):
            left = t - start if start > 0 else n  # the text's own start is no cut
            right = end - 1 - t if end < n else n
            if min(left, right) > score[t]:
                best[t], score[t] = k, min(left, right)
    return best


def word_windows(ids: list[int], word_ids: list, room: int, stride: int, cls_id: int, sep_id: int):
    """One text's sub-tokens (ids, and the word index of each) as window rows.

    Each row: `start` (its first sub-token's index in the text), input_ids ([CLS] + the span +
    [SEP]) and `reads`, a list of the same length holding
    word index w at the one position where word w's tag is read (its first sub-token, in the
    window that owns it) and None elsewhere. Across a text's rows every word with at least one
    sub-token is read exactly once.
    """
    n = len(ids)
    first = [w is not None and (t == 0 or word_ids[t - 1] != w) for t, w in enumerate(word_ids)]
    windows = spans(n, room, stride)
    own = owners(n, windows)
    rows = []
    for k, (start, end) in enumerate(windows):
        reads = [word_ids[t] if first[t] and own[t] == k else None for t in range(start, end)]
        rows.append({"start": start, "input_ids": [cls_id, *ids[start:end], sep_id], "reads": [None, *reads, None]})
    return rows


def scatter_reads(out: list, preds, reads: list) -> None:
    """Write one window's predictions [N] into `out` (one entry per word) where `reads` says so."""
    preds = preds.tolist() if hasattr(preds, "tolist") else list(preds)
    for pos, w in enumerate(reads):
        if w is not None:
            out[w] = int(preds[pos])
