"""Tokenisers against a plain per-k-mer Python reference, plus round-trip properties and real protein files."""
from __future__ import annotations

import functools
import re
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genoformer.errors import InputError, UsageError
from genoformer.tokenize import (KmerTokenizer, ProteinTokenizer, reverse_complement, soft_mask,
                                 tokenizer_from_dict)

IUPAC = "RYKMSWBDHV"
DNA_TEXT = "ACGTN" + "acgtn" + "Uu" + IUPAC + IUPAC.lower()
PROTEIN = "ACDEFGHIKLMNPQRSTVWY" + "BZUO*-X"
COMPLEMENT = dict(zip("ACGTURYKMSWBDHVN", "TGCAAYRMKSWVHDBN"))

dna_seqs = st.text(alphabet=DNA_TEXT, max_size=80)
k_stride = st.integers(1, 8).flatmap(lambda k: st.tuples(st.just(k), st.integers(1, k)))
PROPS = settings(max_examples=150, deadline=None)


@functools.lru_cache(maxsize=None)
def dna(k: int, stride: int) -> KmerTokenizer:
    return KmerTokenizer(k, stride)


def normalise(seq: str) -> str:
    return "".join("T" if c == "U" else "N" if c in IUPAC else c for c in seq.upper())


def reference_encode(seq: str, k: int, stride: int) -> list[int]:
    """One k-mer at a time: 4 specials, then base-5 ACGTN k-mers (k <= 6) or base-4 ACGT + [NKMER]."""
    seq = normalise(seq)
    if not seq:
        return []
    n_tokens = 1 + -(-max(len(seq) - k, 0) // stride)
    seq += "N" * ((n_tokens - 1) * stride + k - len(seq))
    ids = []
    for i in range(n_tokens):
        kmer = seq[i * stride:i * stride + k]
        if k <= 6:
            ids.append(4 + sum("ACGTN".index(c) * 5 ** (k - 1 - j) for j, c in enumerate(kmer)))
        elif "N" in kmer:
            ids.append(4 + 4 ** k)
        else:
            ids.append(4 + sum("ACGT".index(c) * 4 ** (k - 1 - j) for j, c in enumerate(kmer)))
    return ids


def owner_of(base: int, k: int, stride: int) -> int:
    return 0 if base < k else (base - k) // stride + 1


@PROPS
@given(dna_seqs, k_stride)
def test_dna_encode_matches_reference_for_every_input_type(seq, ks):
    tok = dna(*ks)
    expected = reference_encode(seq, *ks)
    for form in (seq, seq.encode(), np.frombuffer(seq.encode(), dtype=np.uint8)):
        ids = tok.encode(form)
        assert ids.dtype == np.int64 and ids.tolist() == expected
    assert len(expected) == tok.n_tokens(len(seq))
    assert all(0 <= i < tok.vocab_size for i in expected)


@PROPS
@given(dna_seqs, k_stride)
def test_dna_round_trip_up_to_normalisation(seq, ks):
    k, stride = ks
    tok = dna(k, stride)
    ids = tok.encode(seq)
    expected = list(normalise(seq))
    if k >= 7:  # a base owned by an [NKMER] token decodes as N
        for b in range(len(seq)):
            if ids[owner_of(b, k, stride)] == tok.nkmer_id:
                expected[b] = "N"
    assert tok.decode(ids, len(seq)) == "".join(expected)


@PROPS
@given(st.text(alphabet="ACGTacgt", max_size=80), k_stride)
def test_acgt_round_trips_exactly_without_padding(seq, ks):
    """ACGT-only sequences whose tiling needs no padding are lossless at every k, upper-cased."""
    k, stride = ks
    tok = dna(k, stride)
    if len(seq) >= k and (len(seq) - k) % stride == 0:
        assert tok.decode(tok.encode(seq)) == seq.upper()


@PROPS
@given(dna_seqs, k_stride, st.integers(0, 1000))
def test_token_spans_cover_the_sequence_and_owners_partition_it(seq, ks, start):
    k, stride = ks
    tok = dna(k, stride)
    n = len(seq)
    starts, ends = tok.token_spans(tok.n_tokens(n), start)
    covered = np.zeros(n + k, dtype=int)
    for s, e in zip(starts - start, ends - start):
        assert e - s == k
        covered[s:e] += 1
    assert (covered[:n] > 0).all()
    if n:  # only the last token may run past the end, and only by padding shorter than k
        assert (ends[:-1] - start <= n).all() and ends[-1] - start - n < k
    owner = tok.token_of_base(n)
    assert owner.tolist() == [owner_of(b, k, stride) for b in range(n)]
    b = np.arange(n)
    assert ((starts[owner] - start <= b) & (b < ends[owner] - start)).all()


@PROPS
@given(st.text(alphabet="ACGTNRYKMSWBDHVacgtnrykmswbdhv", max_size=80))
def test_reverse_complement_is_an_involution_and_keeps_case(seq):
    rc = reverse_complement(seq)
    assert rc == "".join(COMPLEMENT[c.upper()] if c.isupper() else COMPLEMENT[c.upper()].lower()
                         for c in reversed(seq))
    assert reverse_complement(rc) == seq
    assert reverse_complement(seq.encode()) == rc.encode()
    assert reverse_complement(np.frombuffer(seq.encode(), dtype=np.uint8)).tobytes() == rc.encode()


def test_reverse_complement_of_u_is_a_and_bad_characters_raise():
    assert reverse_complement("UuACG") == "CGTaA"
    with pytest.raises(InputError, match=r"'-' at offset 2"):
        reverse_complement("AC-G")


@PROPS
@given(dna_seqs, k_stride)
def test_reverse_complement_ids_on_symmetric_tilings(seq, ks):
    k, stride = ks
    tok = dna(k, stride)
    if len(seq) >= k and (len(seq) - k) % stride == 0:
        assert (tok.reverse_complement_ids(tok.encode(seq)) == tok.encode(reverse_complement(seq))).all()
    rc_ids = tok.reverse_complement_ids(tok.encode(seq))
    assert (tok.reverse_complement_ids(rc_ids) == tok.encode(seq)).all()


def test_reverse_complement_ids_differ_when_padding_moves():
    tok = KmerTokenizer(3)
    seq = "AACGT"  # (5 - 3) % 3 != 0: the pad N sits at the 3' end of each strand
    assert tok.decode(tok.reverse_complement_ids(tok.encode(seq))) == "NACGTT"
    assert tok.decode(tok.encode(reverse_complement(seq))) == "ACGTTN"


@PROPS
@given(dna_seqs)
def test_soft_mask_marks_lowercase(seq):
    assert soft_mask(seq).tolist() == [c.islower() for c in seq]


@settings(max_examples=60, deadline=None)
@given(dna_seqs, k_stride, st.sampled_from("-*.0 >@\n"), st.integers(0, 80))
def test_bad_dna_character_names_itself_and_offset(seq, ks, bad, where):
    where = min(where, len(seq))
    with pytest.raises(InputError, match=re.escape(f"{bad!r} at offset {where} ")):
        dna(*ks).encode(seq[:where] + bad + seq[where:])


def test_non_ascii_and_wrong_types_raise():
    with pytest.raises(InputError, match="'é' at offset 2"):
        KmerTokenizer(3).encode("ACé")
    with pytest.raises(UsageError):
        KmerTokenizer(3).encode(np.array([65, 67], dtype=np.int32))


@pytest.mark.parametrize("cls,k,stride", [
    (KmerTokenizer, 0, None), (KmerTokenizer, 9, None), (KmerTokenizer, 4, 5), (KmerTokenizer, 4, 0),
    (KmerTokenizer, 2.0, None), (KmerTokenizer, True, None), (ProteinTokenizer, 4, None),
    (ProteinTokenizer, 0, None), (ProteinTokenizer, 2, 3),
])
def test_k_and_stride_out_of_range_raise(cls, k, stride):
    with pytest.raises(UsageError, match="k|stride"):
        cls(k, stride)


def test_vocabulary_sizes_and_names():
    assert [KmerTokenizer(k).vocab_size for k in range(1, 9)] == \
        [4 + 5 ** k for k in range(1, 7)] + [4 + 4 ** 7 + 1, 4 + 4 ** 8 + 1]
    assert ProteinTokenizer(3).vocab_size == 4 + 27 ** 3
    tok = KmerTokenizer(8)
    assert [tok.id_to_token(i) for i in (0, 1, 2, 3, 4, tok.vocab_size - 1)] == \
        ["[PAD]", "[MASK]", "[CLS]", "[UNK]", "AAAAAAAA", "[NKMER]"]
    assert tok.id_to_token(tok.vocab_size - 2) == "TTTTTTTT"


@PROPS
@given(dna_seqs, k_stride)
def test_json_round_trip_gives_identical_encodings(tmp_path_factory, seq, ks):
    tok = dna(*ks)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save_json(path)
    loaded = KmerTokenizer.load_json(path)
    assert loaded == tok and loaded is not tok
    assert (loaded.encode(seq) == tok.encode(seq)).all()
    assert (tokenizer_from_dict(tok.to_dict()).encode(seq) == tok.encode(seq)).all()


def test_bad_tokenizer_json_raises_input_error(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="t.json: not valid JSON, expected a tokenizer"):
        KmerTokenizer.load_json(path)
    with pytest.raises(InputError, match="no-such.json: cannot read"):
        KmerTokenizer.load_json(tmp_path / "no-such.json")
    d = KmerTokenizer(4).to_dict()
    with pytest.raises(InputError, match="vocab_size"):
        tokenizer_from_dict(d | {"vocab_size": 999})
    with pytest.raises(InputError, match="unknown tokenizer"):
        tokenizer_from_dict(d | {"tokenizer": "bpe"})
    with pytest.raises(InputError, match="expected 'protein'"):
        ProteinTokenizer.from_dict(d)
    path.write_text('{"tokenizer": "dna", "format_version": 1, "k": 12}')
    with pytest.raises(InputError, match="t.json: .*k must be"):
        KmerTokenizer.load_json(path)


def test_decode_handles_special_tokens():
    tok = KmerTokenizer(2)
    ids = tok.encode("ACGT")
    assert tok.decode([tok.cls_id, *ids, tok.pad_id, tok.pad_id]) == "ACGT"
    assert tok.decode([ids[0], tok.mask_id]) == "ACNN"
    for bad in ([tok.pad_id, *ids], [*ids[:1], tok.cls_id, *ids[1:]], [tok.vocab_size]):
        with pytest.raises(UsageError):
            tok.decode(bad)
    with pytest.raises(UsageError, match="cannot stand for"):
        tok.decode(ids, n_bases=7)


@PROPS
@given(st.text(alphabet=PROTEIN + PROTEIN.lower(), max_size=60), st.integers(1, 3), st.data())
def test_protein_round_trip(seq, k, data):
    stride = data.draw(st.integers(1, k))
    tok = ProteinTokenizer(k, stride)
    ids = tok.encode(seq)
    assert len(ids) == tok.n_tokens(len(seq))
    assert tok.decode(ids, len(seq)) == seq.upper()
    padded = seq.upper() + "X" * (max(len(ids) - 1, 0) * stride + k - len(seq)) if seq else ""
    assert ids.tolist() == [4 + sum(PROTEIN.index(c) * 27 ** (k - 1 - j)
                                    for j, c in enumerate(padded[i * stride:i * stride + k]))
                            for i in range(len(ids))]


def test_protein_rejects_dna_gaps_it_does_not_know():
    with pytest.raises(InputError, match=r"'\.' at offset 3"):
        ProteinTokenizer().encode("MKV.A")


def fasta_records(text: str) -> list[str]:
    seqs, current = [], []
    for line in text.splitlines():
        if line.startswith(">"):
            if current:
                seqs.append("".join(current))
            current = []
        elif line.strip():
            current.append(line.strip())
    return seqs + ["".join(current)] if current else seqs


@pytest.mark.parametrize("k,stride", [(1, 1), (2, 2), (3, 3), (3, 1)])
def test_real_protein_files_round_trip(shared_data, k, stride):
    cb513 = fasta_records((shared_data / "protein/cb513/CB513.fasta").read_text())
    with zipfile.ZipFile(shared_data / "protein/flip_secondary_structure/splits.zip") as z:
        flip = fasta_records(z.read("splits/sequences.fasta").decode("ascii"))
    assert len(cb513) == 511 and sum(map(len, cb513)) == 144_011 and len(flip) == 11_156
    tok = ProteinTokenizer(k, stride)
    for seq in cb513 + flip:
        assert tok.decode(tok.encode(seq), len(seq)) == seq
