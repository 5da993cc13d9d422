"""k-mer tokenisers for DNA and protein, vectorised in numpy (no per-base Python loop).

Normalisation. Encoding upper-cases; soft-masking is kept apart by `soft_mask(seq)`. DNA: U -> T and
IUPAC ambiguity codes RYKMSWBDHV -> N. Protein: the 20 standard amino acids, X B Z U O, '*' (stop)
and '-' (gap). Any other character raises InputError naming it and its 0-based offset.

Vocabulary (deterministic; ids depend only on the alphabet, k and the layout below):
  0 [PAD], 1 [MASK], 2 [CLS], 3 [UNK], then every k-mer in lexicographic order of the alphabet.
  - DNA, k <= 6: alphabet ACGTN, 5^k k-mers (15,625 at k=6): every k-mer, N at any position, has a token.
  - DNA, k = 7, 8: the 4^k ACGT k-mers, then one [NKMER] token for any k-mer holding an N
    (5^8 = 390,625 tokens would be too many embeddings). [NKMER] decodes as k N's.
  - Protein (k <= 3): alphabet ACDEFGHIKLMNPQRSTVWY BZUO*- X (in that order), 27^k k-mers.

Tiling. Token i covers bases [i*stride, i*stride + k). A sequence of L > 0 bases gives
n_tokens(L) = 1 + ceil(max(L - k, 0) / stride) tokens; when the last k-mer runs past L it is padded
with N (DNA) or X (protein). `decode(ids, n_bases=L)` drops that padding.
Token 0 owns its k bases and each later token owns its last `stride` bases, so every base has
exactly one owner (`token_of_base`) and decode reads each base from its owner.

Round trip: decode(encode(s), len(s)) == normalise(s) exactly for protein and for DNA k <= 6.
For DNA k >= 7 the same holds except that a base owned by an [NKMER] token (a k-mer holding a real
or padding N) decodes as N.
Reverse complement: encode(reverse_complement(s)) == reverse_complement_ids(encode(s)) when the
tiling is symmetric, i.e. len(s) >= k and (len(s) - k) % stride == 0 (no padding); otherwise the
padding sits at the other end and the two differ.
"""
from __future__ import annotations

import json
import os

import numpy as np

from genoformer.errors import InputError, UsageError
from genoformer.io.json_files import read_json
from genoformer.outputs import write_text

SPECIAL_TOKENS = ("[PAD]", "[MASK]", "[CLS]", "[UNK]")
PAD_ID, MASK_ID, CLS_ID, UNK_ID = range(4)
_FIRST_KMER_ID = len(SPECIAL_TOKENS)
_INVALID = 255
_FORMAT_VERSION = 1


def _code_table(pairs: dict[bytes, int]) -> np.ndarray:
    """uint8 [256] ASCII -> letter code, for both cases; everything else is _INVALID."""
    lut = np.full(256, _INVALID, dtype=np.uint8)
    for letters, code in pairs.items():
        for c in letters:
            lut[ord(chr(c).upper())] = lut[ord(chr(c).lower())] = code
    return lut


def _as_bytes(seq: np.ndarray | str | bytes) -> np.ndarray:
    """A 1-D uint8 view of ASCII codes."""
    if isinstance(seq, str):
        try:
            seq = seq.encode("ascii")
        except UnicodeEncodeError as exc:
            raise InputError(f"invalid character {seq[exc.start]!r} at offset {exc.start} "
                             "(sequences are ASCII)") from None
    if isinstance(seq, (bytes, bytearray, memoryview)):
        return np.frombuffer(seq, dtype=np.uint8)
    arr = np.asarray(seq)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise UsageError(f"a sequence must be str, bytes or a 1-D uint8 array, got {arr.dtype} {arr.shape}")
    return arr


def _raise_first_invalid(seq: np.ndarray, codes: np.ndarray, what: str, allowed: str) -> None:
    offset = int(np.flatnonzero(codes == _INVALID)[0])
    raise InputError(f"invalid {what} character {chr(seq[offset])!r} at offset {offset} (allowed: {allowed})")


_LOWER = np.zeros(256, dtype=bool)
_LOWER[ord("a"):ord("z") + 1] = True


def soft_mask(seq: np.ndarray | str | bytes) -> np.ndarray:
    """bool [L]: True where the base is lowercase (soft-masked repeat)."""
    return _LOWER[_as_bytes(seq)]


_COMPLEMENT = np.zeros(256, dtype=np.uint8)  # 0 = not a nucleotide code
for _a, _b in zip(b"ACGTURYKMSWBDHVN", b"TGCAAYRMKSWVHDBN"):
    _COMPLEMENT[_a], _COMPLEMENT[_a + 32] = _b, _b + 32


def reverse_complement(seq: np.ndarray | str | bytes) -> np.ndarray | str | bytes:
    """Reverse complement with IUPAC codes, keeping case and the input's type.

    U complements to A, so rc(rc(s)) == s for every accepted character except U (which comes back as T).
    """
    arr = _as_bytes(seq)
    comp = _COMPLEMENT[arr]
    if arr.size and not comp.all():
        offset = int(np.flatnonzero(comp == 0)[0])
        raise InputError(f"invalid DNA character {chr(arr[offset])!r} at offset {offset} "
                         "(allowed: ACGTUN and IUPAC RYKMSWBDHV, either case)")
    out = comp[::-1]
    if isinstance(seq, str):
        return out.tobytes().decode("ascii")
    if isinstance(seq, (bytes, bytearray, memoryview)):
        return out.tobytes()
    return np.ascontiguousarray(out)


class _KmerTokenizer:
    """Shared k-mer machinery; subclasses set the alphabet, its lookup table and the k range."""

    kind: str
    alphabet: bytes       # letters in code order; the last one pads and stands for unknown
    max_k: int
    _lut: np.ndarray      # uint8 [256] ASCII -> code
    _allowed: str         # for error messages
    pad_id, mask_id, cls_id, unk_id = PAD_ID, MASK_ID, CLS_ID, UNK_ID

    def __init__(self, k: int, stride: int | None = None):
        for name, value, hi in (("k", k, self.max_k), ("stride", k if stride is None else stride, k)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= hi:
                raise UsageError(f"{self.kind} tokenizer: {name} must be an integer in 1..{hi}, got {value!r}")
        self.k, self.stride = int(k), int(k if stride is None else stride)
        self._radix = len(self.alphabet)
        self._raw_to_id = self._build_raw_to_id()  # None: id = raw index + _FIRST_KMER_ID
        self._letters = self._build_letters()      # uint8 [vocab_size, k] ASCII of each token
        self.vocab_size = len(self._letters)

    # vocabulary layout; DNA k >= 7 overrides both
    def _build_raw_to_id(self) -> np.ndarray | None:
        return None

    def _kmer_letters(self, radix: int, letters: bytes) -> np.ndarray:
        """uint8 [radix^k, k]: every k-mer over `letters` in lexicographic (= id) order."""
        raw = np.arange(radix ** self.k, dtype=np.int64)
        digits = np.stack([(raw // radix ** (self.k - 1 - j)) % radix for j in range(self.k)], axis=1)
        return np.frombuffer(letters, dtype=np.uint8)[digits]

    def _build_letters(self) -> np.ndarray:
        unknown = np.full((len(SPECIAL_TOKENS), self.k), self.alphabet[-1], dtype=np.uint8)
        return np.concatenate([unknown, self._kmer_letters(self._radix, self.alphabet)])

    # tiling
    def n_tokens(self, n_bases: int) -> int:
        """Tokens for a sequence of n_bases (the last k-mer padded where it runs past the end)."""
        if n_bases <= 0:
            return 0
        return 1 + (max(n_bases - self.k, 0) + self.stride - 1) // self.stride

    def token_spans(self, n_tokens: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """int64 starts, ends [n_tokens]: the base interval [start_i, end_i) each token covers."""
        starts = start + np.arange(n_tokens, dtype=np.int64) * self.stride
        return starts, starts + self.k

    def token_of_base(self, n_bases: int) -> np.ndarray:
        """int64 [n_bases]: the token that owns each base (token 0 its k bases, later ones their last stride)."""
        b = np.arange(n_bases, dtype=np.int64)
        return np.where(b < self.k, 0, (b - self.k) // self.stride + 1)

    # encode / decode
    def encode(self, seq: np.ndarray | str | bytes) -> np.ndarray:
        """int64 [n_tokens(len(seq))] token ids."""
        return self.encode_codes(self.codes(seq))

    def codes(self, seq: np.ndarray | str | bytes) -> np.ndarray:
        """uint8 [L]: each letter's index in `alphabet`, normalised as encode does (N or X: `pad_code`)."""
        arr = _as_bytes(seq)
        codes = self._lut[arr]
        if codes.size and codes.max() == _INVALID:
            _raise_first_invalid(arr, codes, self.kind, self._allowed)
        return codes

    def encode_codes(self, codes: np.ndarray) -> np.ndarray:
        """int64 [n_tokens(len(codes))] token ids of letter codes (as `codes` returns them)."""
        codes = np.asarray(codes, dtype=np.uint8)
        return self._encode_codes(codes, self.n_tokens(codes.size), self.stride)

    @property
    def pad_code(self) -> int:
        """The letter code of N (DNA) or X (protein): unknown letters and the padding past a sequence."""
        return self._radix - 1

    def _encode_codes(self, codes: np.ndarray, n: int, stride: int) -> np.ndarray:
        """Ids of the n k-mers starting every `stride` codes, padding past the end."""
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        total = (n - 1) * stride + self.k
        if codes.size < total:
            codes = np.concatenate([codes, np.full(total - codes.size, self._radix - 1, dtype=np.uint8)])
        # base-radix number of each k-mer: one strided column per k-mer position, accumulated in int32
        last = (n - 1) * stride + 1
        raw = codes[0:last:stride].astype(np.int32)
        for j in range(1, self.k):
            raw *= self._radix
            raw += codes[j:j + last:stride]
        if self._raw_to_id is not None:
            return self._raw_to_id[raw]
        ids = np.empty(n, dtype=np.int64)
        np.add(raw, _FIRST_KMER_ID, out=ids)
        return ids

    def decode(self, ids: np.ndarray | list[int], n_bases: int | None = None) -> str:
        """The sequence (upper case, normalised) the ids stand for.

        A leading [CLS] and trailing [PAD]s are dropped; [MASK]/[UNK] decode as unknown letters.
        n_bases (default: all bases the tokens cover) drops the padding of the last k-mer.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1:
            raise UsageError(f"decode takes a 1-D id sequence, got shape {ids.shape}")
        if ids.size and ids[0] == CLS_ID:
            ids = ids[1:]
        kept = np.flatnonzero(ids != PAD_ID)
        ids = ids[:kept[-1] + 1] if kept.size else ids[:0]
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size) | (ids == PAD_ID) | (ids == CLS_ID))
        if bad.size:
            raise UsageError(f"cannot decode id {int(ids[bad[0]])} at position {int(bad[0])} "
                             f"(vocabulary 0..{self.vocab_size - 1}; [PAD]/[CLS] only at the ends)")
        covered = (ids.size - 1) * self.stride + self.k if ids.size else 0
        n = covered if n_bases is None else int(n_bases)
        if n < 0 or self.n_tokens(n) != ids.size:
            raise UsageError(f"{ids.size} tokens cannot stand for {n} bases "
                             f"(k={self.k}, stride={self.stride} gives {self.n_tokens(n)} tokens)")
        owner = self.token_of_base(n)
        offset = np.arange(n, dtype=np.int64) - owner * self.stride
        return self._letters[ids[owner], offset].tobytes().decode("ascii")

    def id_to_token(self, token_id: int) -> str:
        """Readable name of one id: a special token, [NKMER] or the k-mer's letters."""
        if token_id < len(SPECIAL_TOKENS):
            return SPECIAL_TOKENS[token_id]
        return self._letters[token_id].tobytes().decode("ascii")

    # serialisation
    def to_dict(self) -> dict:
        return {"tokenizer": self.kind, "format_version": _FORMAT_VERSION, "k": self.k, "stride": self.stride,
                "alphabet": self.alphabet.decode("ascii"), "special_tokens": list(SPECIAL_TOKENS),
                "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, d: dict) -> _KmerTokenizer:
        tok = tokenizer_from_dict(d)
        if not isinstance(tok, cls):
            raise InputError(f"tokenizer is {tok.kind!r}, expected {cls.kind!r}")
        return tok

    def save_json(self, path: str | os.PathLike) -> None:
        """Write to_dict() as JSON, atomically (genoformer.outputs)."""
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> _KmerTokenizer:
        d = read_json(path, "a tokenizer")
        try:
            return cls.from_dict(d)
        except (InputError, UsageError) as exc:
            raise InputError(f"{path}: {exc}") from exc

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash((self.kind, self.k, self.stride))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, stride={self.stride}, vocab_size={self.vocab_size})"


class KmerTokenizer(_KmerTokenizer):
    """DNA k-mers (k 1..8, stride 1..k; stride defaults to k). See the module docstring for the policy."""

    kind = "dna"
    alphabet = b"ACGTN"
    max_k = 8
    max_k_with_n = 6  # beyond this, k-mers holding N share the one [NKMER] token
    _lut = _code_table({b"A": 0, b"C": 1, b"G": 2, b"TU": 3, b"NRYKMSWBDHV": 4})
    _allowed = "ACGTUN and IUPAC RYKMSWBDHV, either case"

    def __init__(self, k: int = 6, stride: int | None = None):
        super().__init__(k, stride)
        comp = self._lut[_COMPLEMENT[self._letters[:, ::-1]]].ravel()
        # rc of every token, by encoding its reverse-complemented letters; specials map to themselves
        self._rc_ids = self._encode_codes(comp, self.vocab_size, self.k)
        self._rc_ids[:_FIRST_KMER_ID] = np.arange(_FIRST_KMER_ID)

    @property
    def nkmer_id(self) -> int | None:
        """Id of [NKMER] (k >= 7), else None."""
        return self.vocab_size - 1 if self.k > self.max_k_with_n else None

    def _build_raw_to_id(self) -> np.ndarray | None:
        if self.k <= self.max_k_with_n:
            return None
        # base-5 raw index -> id: ACGT k-mers in base-4 order, any N -> [NKMER]
        raw = np.arange(5 ** self.k, dtype=np.int64)
        base4 = np.zeros_like(raw)
        has_n = np.zeros(raw.shape, dtype=bool)
        for j in range(self.k):
            digit = (raw // 5 ** (self.k - 1 - j)) % 5
            has_n |= digit == 4
            base4 = base4 * 4 + (digit & 3)
        return np.where(has_n, _FIRST_KMER_ID + 4 ** self.k, _FIRST_KMER_ID + base4)

    def _build_letters(self) -> np.ndarray:
        if self.k <= self.max_k_with_n:
            return super()._build_letters()
        unknown = np.full((len(SPECIAL_TOKENS), self.k), ord("N"), dtype=np.uint8)
        nkmer = np.full((1, self.k), ord("N"), dtype=np.uint8)
        return np.concatenate([unknown, self._kmer_letters(4, b"ACGT"), nkmer])

    def id_to_token(self, token_id: int) -> str:
        return "[NKMER]" if token_id == self.nkmer_id else super().id_to_token(token_id)

    def reverse_complement_ids(self, ids: np.ndarray) -> np.ndarray:
        """Token ids of the reverse-complement strand: each k-mer complemented, order reversed.

        Equals encode(reverse_complement(s)) only for symmetric tilings ((len(s) - k) % stride == 0).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size)):
            raise UsageError(f"reverse_complement_ids takes a 1-D sequence of ids in 0..{self.vocab_size - 1}")
        return self._rc_ids[ids[::-1]]


class ProteinTokenizer(_KmerTokenizer):
    """Protein k-mers (k 1..3, stride 1..k): 20 amino acids, X B Z U O, '*' stop and '-' gap."""

    kind = "protein"
    alphabet = b"ACDEFGHIKLMNPQRSTVWYBZUO*-X"
    max_k = 3
    _lut = _code_table({bytes([c]): i for i, c in enumerate(b"ACDEFGHIKLMNPQRSTVWYBZUO*-X")})
    _allowed = "ACDEFGHIKLMNPQRSTVWY, X B Z U O, '*', '-', either case"

    def __init__(self, k: int = 1, stride: int | None = None):
        super().__init__(k, stride)


_KINDS = {"dna": KmerTokenizer, "protein": ProteinTokenizer}


def tokenizer_from_dict(d: dict) -> KmerTokenizer | ProteinTokenizer:
    """Rebuild a tokenizer from to_dict(), checking that the vocabulary layout is the same."""
    if not isinstance(d, dict) or d.get("tokenizer") not in _KINDS:
        kind = d.get("tokenizer") if isinstance(d, dict) else type(d).__name__
        raise InputError(f"unknown tokenizer {kind!r} (expected one of {', '.join(_KINDS)})")
    if d.get("format_version") != _FORMAT_VERSION:
        raise InputError(f"tokenizer format_version {d.get('format_version')!r} is not supported "
                         f"(this genoformer reads {_FORMAT_VERSION})")
    try:
        tok = _KINDS[d["tokenizer"]](d["k"], d.get("stride"))
    except KeyError as exc:
        raise InputError(f"tokenizer entry lacks {exc.args[0]!r}") from None
    expected = tok.to_dict()
    differ = [key for key in expected if key in d and d[key] != expected[key]]
    if differ:
        raise InputError(f"tokenizer {', '.join(differ)} differ from this genoformer's layout "
                         f"({', '.join(f'{key}={d[key]!r}' for key in differ)})",
                         hint="the vocabulary changed; use the genoformer version that wrote it")
    return tok
