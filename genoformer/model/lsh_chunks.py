"""Which keys an LSH query sees: the chunk rule, written once.

A hashing round sorts a sequence's tokens by (bucket, position), real tokens before padding, and
cuts that order into chunks of bucket_size.  A query sees the keys of its own chunk and of the
chunk before it.  The first chunk looks back to the last chunk holding real tokens (the order
wraps round, as in HF's and reformer-pytorch's Reformer, but never into chunks of padding alone);
a lone chunk, the only one holding real tokens, does not look back at itself.  Padding keys are
never seen, nor, in causal attention, later ones.

A token's own key is seen with SELF_SCORE added to its score: its weight vanishes while the query
has any other key, in any round (rounds share one softmax), and is everything when it has none.
`attended` states that consequence for code that counts pairs instead of weighing them.

The kernel (model/fast/lsh_kernels.py), the plain reference (model/lsh.py), the top-attended
search (model/lsh_inspect.py) and the bucket statistics (buckets/stats.py, in numpy) all use
these functions; each takes numpy arrays and torch tensors alike.
"""
from __future__ import annotations

SELF_SCORE = -5e4  # added to a token's own key: below any real score (keys are unit vectors), finite in fp16


def last_chunk(n_real, bucket_size: int):
    """The last chunk holding real tokens, for sequences of n_real real tokens (chunk 0 when there are none)."""
    chunks = (n_real + bucket_size - 1) // bucket_size
    return chunks - 1 + (chunks == 0)


def lookback(chunk, last):
    """The chunk that `chunk` looks back to: the one before it, and for chunk 0 `last` (its sequence's last_chunk)."""
    return chunk - 1 + (chunk == 0) * (last + 1)


def looks_back(chunk, last):
    """Whether `chunk` sees the chunk it looks back to: all do but a lone chunk (chunk 0 when it is also the last)."""
    return lookback(chunk, last) != chunk


def in_window(query_chunk, key_chunk, last):
    """Whether a key in key_chunk lies in the window of a query in query_chunk (one round; padding and
    causality aside)."""
    return (key_chunk == query_chunk) | ((key_chunk == lookback(query_chunk, last)) & looks_back(query_chunk, last))


def attended(seen, own):
    """Of the keys a query sees, those with a non-zero weight: seen and own bool [..., keys], the keys listed
    over every round, own marking the query's own key.  The own key counts only where no other is seen."""
    alone = ~(seen & ~own).any(-1)
    return seen & (~own | alone[..., None])
