"""Hypothesis fuzz of the parsers a user's text reaches: region strings, BED lines, FASTA headers and
lines, recipe keys and values (RELIABILITY.md §6, the lightweight OSS-Fuzz analogue).

Each parser either returns what a plain reading of the same text says, or raises one of the
contract's errors (UsageError, exit 2; InputError, exit 3) with a one-line message: never another
exception (exit 1). Derandomized, with few examples each, so CI is deterministic and this file
takes a few seconds.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genoformer.coords import Interval, parse_region, read_bed
from genoformer.errors import GenoformerError, InputError, UsageError

LENGTHS = {"chr1": 1_000, "chrM": 16_571, "HLA-A*01:01": 300}
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def assert_contract_error(err: BaseException) -> None:
    assert isinstance(err, (UsageError, InputError)), f"{type(err).__name__}: {err}"
    assert err.exit_code in (2, 3) and str(err) and "\n" not in str(err), repr(str(err))


# -- region strings ------------------------------------------------------------------------------

_NUMBER = st.integers(0, 20_000).map(str) | st.integers(0, 20_000).map(lambda n: f"{n:,}")
_REGION = st.one_of(
    st.text(alphabet="chrM1HLA-*:{}0123456789,- ", max_size=24),
    st.tuples(st.sampled_from([*LENGTHS, "chr2", "1", "{HLA-A*01:01}", ""]), _NUMBER, _NUMBER, st.booleans()).map(
        lambda t: f"{t[0]}:{t[1]}-{t[2]}" if t[3] else f"{t[0]}:{t[1]}"),
)


@FUZZ
@given(_REGION)
def test_region_strings(text):
    try:
        iv = parse_region(text, LENGTHS)
    except GenoformerError as err:
        assert_contract_error(err)
        return
    assert iv.contig in LENGTHS and 0 <= iv.start < iv.end <= LENGTHS[iv.contig], (text, iv)
    assert parse_region(iv.to_region(), LENGTHS) == iv


# -- BED -----------------------------------------------------------------------------------------

_FIELD = st.one_of(st.sampled_from(["chr1", "chrM", "chrX", "", "#", "track", "1e3", "-1"]),
                   st.integers(-5, 1_100).map(str), st.text(alphabet="chrM1 \t,.x", max_size=6))
_BED_LINE = st.lists(_FIELD, min_size=0, max_size=5).map(lambda fields: "\t".join(fields)) | st.tuples(
    st.sampled_from(["chr1", "chrM"]), st.integers(0, 1_100), st.integers(0, 1_100)).map(
    lambda t: f"{t[0]}\t{t[1]}\t{t[2]}")


@FUZZ
@given(st.lists(_BED_LINE, max_size=6), st.sampled_from(["\n", "\r\n"]))
def test_bed_files(lines, newline):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.bed"
        path.write_bytes(newline.join(lines).encode())
        try:
            found = read_bed(path, LENGTHS)
        except GenoformerError as err:
            assert_contract_error(err)
            return
    data = [ln for ln in newline.join(lines).splitlines() if ln.strip() and not ln.startswith(("#", "track", "browser"))]
    plain = []
    for line in data:
        fields = line.split("\t") if len(line.split("\t")) >= 3 else line.split()
        plain.append(Interval(fields[0].strip(), int(fields[1]), int(fields[2])))
    assert found == plain
    assert all(0 <= iv.start < iv.end <= LENGTHS[iv.contig] for iv in found)


# -- FASTA ---------------------------------------------------------------------------------------

_BASES = st.text(alphabet="ACGTNacgtnRY", min_size=0, max_size=12)
_ODD = st.text(alphabet="ACGT \t\r*->", min_size=1, max_size=6)


@st.composite
def fasta_texts(draw) -> tuple[bytes, dict[str, str] | None]:
    """FASTA bytes, and the records a plain reading gives when they are well-formed (else None)."""
    width = draw(st.integers(1, 8))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    records, out, well_formed = {}, [], True
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["chr1", "chr2", "c 3", "x\ty", "", "chr1"]) | st.text("ab1:-", max_size=4))
        seq = draw(_BASES)
        lines = [seq[i:i + width] for i in range(0, len(seq), width)]
        if draw(st.integers(0, 4)) == 0:  # damage one line: odd characters, a line too long or short
            at = draw(st.integers(0, max(len(lines) - 1, 0)))
            lines[at:at + 1] = [draw(_ODD) if draw(st.booleans()) else (lines[at] if lines else "") + "A" * width]
            well_formed = False
        out.append(f">{name}")
        out.extend(lines)
        key = name.split()[0] if name.split() else ""
        if not key or key in records:
            well_formed = False
        records[key] = seq
    text = (newline.join(out) + (newline if out else "")).encode()
    if draw(st.integers(0, 6)) == 0:
        text = draw(st.sampled_from([b"junk\n", b"\r", b"\x00", b"\x1f\x8b"])) + text
        well_formed = False
    return text, records if well_formed and records else None


@FUZZ
@given(fasta_texts())
def test_fasta_headers_and_lines(case):
    from genoformer.io.fasta import Reference

    text, plain = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.fa"
        path.write_bytes(text)
        try:
            ref = Reference(path)
        except GenoformerError as err:
            assert_contract_error(err)
            return
        with ref:
            read = {name: ref.fetch(name, 0, n).tobytes().decode() for name, n in ref.contigs.items()}
    if plain is not None:  # well-formed: exactly the records, empty ones left out (with a warning)
        assert read == {name: seq for name, seq in plain.items() if seq}


# -- recipes -------------------------------------------------------------------------------------

_KEYS = st.sampled_from(["task", "window", "k", "stride", "d-model", "depth", "heads", "bucket-size", "lr",
                         "max-steps", "batch-size", "attention", "model", "seed", "val-fraction", "device",
                         "class-weights", "mask-fraction", "n_hashes", "reversible", "no-such-option"]) | \
    st.text(alphabet="abz_-:. ", min_size=1, max_size=8)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 64) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet="lshfulcpa,0.5-", max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["depth", "d-model", "x"]), inner,
                                                                max_size=2),
    max_leaves=4)


@settings(FUZZ, max_examples=30)
@given(st.dictionaries(_KEYS, _VALUES, max_size=4), st.sampled_from([".yaml", ".toml"]))
def test_recipe_keys_and_values(options, suffix):
    """A recipe is read and checked as `train --config R --dry-run` does up to the data: a TrainConfig,
    or UsageError naming the key."""
    import json

    from genoformer.train import TrainConfig
    from genoformer.train.recipes import read_recipe, with_flags

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"r{suffix}"
        if suffix == ".yaml":
            path.write_text(json.dumps(options))  # JSON is YAML
        else:
            path.write_text("".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in options.items()))
        try:
            config = TrainConfig.from_dict(with_flags(read_recipe(str(path)), {}))
        except GenoformerError as err:
            assert_contract_error(err)
            return
        except TypeError as err:  # only a key TrainConfig does not take as a keyword
            raise AssertionError(f"{options}: {err}") from None
    assert isinstance(config, TrainConfig)
