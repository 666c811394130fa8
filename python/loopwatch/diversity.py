"""Diversity measures for a population, each bounded to [0, 1], as the Rust SDK's
``loopwatch::diversity`` gives them, plus one for populations of programs.

* :func:`unique_count` and :func:`distinct_fraction`: how many members are genuinely
  different, by fingerprint (any hashable value: a genome as a tuple, a hash of code).
* :func:`code_diversity`: how far apart programs are, as the mean pairwise Jaccard
  distance of their token trigrams. Two programs that differ by one edited line read
  near 0, rewrites near 1; whitespace and comments do not count.

::

    import loopwatch, loopwatch.diversity as lwd

    codes = [program.code for program in population]
    with loopwatch.iteration() as it:
        it.population(size=len(codes), unique=lwd.unique_count(map(lwd.code_fingerprint, codes)),
                      diversity=lwd.code_diversity(codes))

Standard library only.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Dict, FrozenSet, Hashable, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "CodeShingles",
    "ShingleCache",
    "code_diversity",
    "code_fingerprint",
    "code_shingles",
    "distinct_fraction",
    "jaccard_distance",
    "unique_count",
]

#: Most program pairs compared by :func:`code_diversity`; larger populations are sampled
#: (with a fixed seed, so that one population always reads the same).
MAX_PAIRS = 300

# A token: an identifier or number, a string literal's opening, or one other character.
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d[\d_.]*|\S")
_COMMENT = re.compile(r"#[^\n]*")

#: A program's shingles: its token trigrams, each reduced to an integer.
CodeShingles = FrozenSet[int]


def unique_count(fingerprints: Iterable[Hashable]) -> int:
    """The number of distinct items, by equality of their fingerprints.

    >>> unique_count(["a", "b", "a"])
    2
    """
    return len(set(fingerprints))


def distinct_fraction(fingerprints: Iterable[Hashable]) -> float:
    """Fraction of the population that is distinct: ``(unique - 1) / (n - 1)``.

    0.0 means every member is a clone of one, 1.0 that all differ; fewer than two
    members have no diversity (0.0). Subtracting the first member makes a population
    of clones read 0 whatever its size.

    >>> distinct_fraction(["x"] * 10), distinct_fraction("abcd"), distinct_fraction("aab")
    (0.0, 1.0, 0.5)
    """
    seen = set()
    n = 0
    for fingerprint in fingerprints:
        n += 1
        seen.add(fingerprint)
    if n < 2:
        return 0.0
    return (len(seen) - 1) / (n - 1)


def _tokens(code: str) -> List[str]:
    """The program's tokens, without comments and whitespace: identifiers, numbers and
    single other characters (a regular expression, not Python's tokenizer, so that it
    is fast and reads any language; a ``#`` inside a string cuts the rest of its line,
    which a diversity measure can afford)."""
    return _TOKEN.findall(_COMMENT.sub("", code))


def code_fingerprint(code: str) -> str:
    """A short fingerprint of a program's tokens: programs that differ only in
    whitespace or comments share it."""
    joined = "\x00".join(_tokens(code)).encode("utf-8", "replace")
    return hashlib.blake2b(joined, digest_size=8).hexdigest()


def code_shingles(code: str) -> CodeShingles:
    """The set of a program's token trigrams (as integers), for
    :func:`jaccard_distance`. Compute it once per program and keep it."""
    tokens = _tokens(code)
    if len(tokens) < 3:
        return frozenset((hash(tuple(tokens)),)) if tokens else frozenset()
    return frozenset(hash((tokens[i], tokens[i + 1], tokens[i + 2])) for i in range(len(tokens) - 2))


def jaccard_distance(a: CodeShingles, b: CodeShingles) -> float:
    """1 − |a ∩ b| / |a ∪ b|: 0 for the same shingles, 1 for none in common."""
    if not a and not b:
        return 0.0
    common = len(a & b)
    return 1.0 - common / (len(a) + len(b) - common)


def _pairs(n: int, max_pairs: int, seed: int) -> List[Tuple[int, int]]:
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    rng = random.Random(seed)
    pairs = []
    for _ in range(max_pairs):
        i, j = rng.sample(range(n), 2)
        pairs.append((i, j))
    return pairs


def code_diversity(
    codes: Sequence[str],
    max_pairs: int = MAX_PAIRS,
    seed: int = 0,
    shingles: Optional[Sequence[CodeShingles]] = None,
) -> float:
    """Mean pairwise Jaccard distance of the programs' token trigrams, in [0, 1].

    Clones (and programs differing only in whitespace or comments) read 0; fewer than
    two programs read 0. Populations with more than ``max_pairs`` pairs are sampled.
    ``shingles``, when given, are the programs' :func:`code_shingles` in the same
    order (a caller that keeps them saves tokenising every program each time).
    """
    sets: Sequence[CodeShingles] = shingles if shingles is not None else [code_shingles(c) for c in codes]
    n = len(sets)
    if n < 2:
        return 0.0
    pairs = _pairs(n, max(1, int(max_pairs)), seed)
    total = 0.0
    for i, j in pairs:
        total += jaccard_distance(sets[i], sets[j])
    return min(max(total / len(pairs), 0.0), 1.0)


class ShingleCache:
    """Shingles of programs by id, kept for the ids still in the population."""

    def __init__(self) -> None:
        self._by_id: Dict[str, Tuple[CodeShingles, str]] = {}

    def get(self, key: str, code: str) -> Tuple[CodeShingles, str]:
        """The shingles and fingerprint of program ``key`` (computed once)."""
        found = self._by_id.get(key)
        if found is None:
            found = (code_shingles(code), code_fingerprint(code))
            self._by_id[key] = found
        return found

    def retain(self, keys: Iterable[str]) -> None:
        """Forgets programs that are no longer in the population."""
        keep = set(keys)
        for key in [k for k in self._by_id if k not in keep]:
            del self._by_id[key]
