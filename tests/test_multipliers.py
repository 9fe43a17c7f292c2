"""jaxdepth.multipliers: published EvoApprox figures, families vs bit-level references, loaders, CLI."""
from __future__ import annotations

import csv
import decimal
import random
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from jaxdepth import multipliers as M
from jaxdepth.multipliers import evoapprox
from jaxdepth.multipliers.__main__ import main as cli_main

KNOWN_DISCREPANCIES = {("mul8s_1KV8", "MAE%"), ("mul8s_1KV9", "MAE%"), ("mul8s_1KVQ", "MAE")}
METRICS = ("MAE%", "MAE", "WCE%", "WCE", "WCRE%", "EP%", "MRE%", "MSE")


def _csv_rows():
    path = resources.files("jaxdepth.multipliers").joinpath("data", "circuits.csv")
    with path.open("r", newline="") as fh:
        return list(csv.DictReader(fh))


ROWS = _csv_rows()


def _half_unit(text: str) -> float:
    """Half a unit in the last printed digit of ``text`` ("0.0018" -> 5e-5, "72829.102e2" -> 0.05)."""
    return 0.5 * float(decimal.Decimal(1).scaleb(decimal.Decimal(text).as_tuple().exponent))


# --- EvoApprox circuits against their published figures -------------------------------------

@pytest.mark.parametrize("row", ROWS, ids=[r["name"] for r in ROWS])
def test_evoapprox_metrics_match_published(row):
    assert len(ROWS) == 66
    m = M.get(row["name"])
    assert m.signed == (row["signedness"] == "signed")
    got = M.metrics(m)
    for key in METRICS:
        pub = float(row[key])
        if (row["name"], key) in KNOWN_DISCREPANCIES:
            assert abs(got[key] - pub) > _half_unit(row[key])  # still a discrepancy
            assert got[key] == pytest.approx(pub, rel=0.06)
        else:
            assert abs(got[key] - pub) <= _half_unit(row[key]) * (1 + 1e-9), (key, got[key], pub)


def test_metrics_definitions_on_a_hand_made_table():
    t = M.exact_table(False).copy()
    t[3, 5] += 4   # e = +4, rel 4/15
    t[0, 7] = -2  # e = -2 where a*b = 0: excluded from MRE/WCRE (and makes the table signed-looking)
    m = M.Multiplier("hand", t, False)
    got = M.metrics(m)
    n = 65536
    assert got["MAE"] == pytest.approx(6 / n)
    assert got["MAE%"] == pytest.approx(6 / n / n * 100)
    assert got["WCE"] == 4 and got["WCE%"] == pytest.approx(4 / n * 100)
    assert got["EP%"] == pytest.approx(2 / n * 100)
    assert got["MSE"] == pytest.approx(20 / n)
    assert got["ME"] == got["bias"] == pytest.approx(2 / n)
    assert got["WCRE%"] == pytest.approx(400 / 15)
    assert got["MRE%"] == pytest.approx(100 * (4 / 15) / (255 * 255))


@pytest.mark.parametrize("name", ["exact_s8", "exact_u8", "mul8u_1JJQ", "mul8s_1KV6"])
def test_exact_tables_have_zero_error(name):
    m = M.get(name)
    assert m.is_exact
    assert all(v == 0 for v in M.metrics(m).values())


def test_aliases_and_published():
    a, b = M.get("mul8s_1KV8@master"), M.get("mul8s_1KV6")
    assert a.name == "mul8s_1KV6" and np.array_equal(a.table, b.table)
    assert M.published("mul8s_1KV8@master")["name"] == "mul8s_1KV6"
    pub = M.published("mul8s_1L2J")
    row = next(r for r in ROWS if r["name"] == "mul8s_1L2J")
    assert pub["MAE%"] == float(row["MAE%"]) and pub["power_mW"] == float(row["power_mW"])
    with pytest.raises(KeyError, match="not an EvoApprox"):
        M.published("trunc_u8_k4")


def test_published_takes_a_multiplier_too():
    assert M.published(M.get("mul8s_1L2J")) == M.published("mul8s_1L2J")


def test_transpose():
    m = M.get("mul8u_2NDH")
    t = M.get("mul8u_2NDH", transpose=True)
    assert np.array_equal(t.table, m.table.T) and not np.array_equal(t.table, m.table)
    assert t.transposed().name == m.name
    # the metrics average over all pairs and the exact product is symmetric
    assert M.metrics(t) == pytest.approx(M.metrics(m))
    f = M.get("drum_u8_k3", transpose=True)
    assert np.array_equal(f.table, M.get("drum_u8_k3").table.T)
    # the name a transposed multiplier carries (saved plans) names it again
    assert np.array_equal(M.get(t.name).table, t.table) and M.get(t.name).name == t.name == "mul8u_2NDH.T"
    assert M.get("mul8u_2NDH.T", transpose=True).name == "mul8u_2NDH"


def test_unknown_names_suggest():
    with pytest.raises(KeyError, match="Did you mean.*mul8s_1L2J"):
        M.get("mul8s_1L2K")
    with pytest.raises(KeyError, match="Did you mean: mul8u_NLX,"):     # suggestions ignore case
        M.get("mul8u_nlx")
    with pytest.raises(KeyError, match="trunc_s8_k4"):
        M.get("trunc_s8_k")
    with pytest.raises(KeyError, match="out of range"):
        M.get("trunc_u8_k16")
    with pytest.raises(KeyError, match="out of range"):
        M.get("drum_s8_k0")


# --- families against independent scalar bit-level references -------------------------------

def ref_pp(a, b, keep):
    """Sum of the partial-product bits a_i b_j 2^(i+j) kept by keep(i, j)."""
    s = 0
    for i in range(8):
        for j in range(8):
            if keep(i, j) and (a >> i) & 1 and (b >> j) & 1:
                s += 1 << (i + j)
    return s


def ref_drum(a, b, k):
    def approx(x):
        bits = format(x, "b")
        if len(bits) <= k:
            return x
        seg = bits[:k - 1] + "1"  # k bits from the leading one, last one forced to 1
        return int(seg, 2) << (len(bits) - k)
    return approx(a) * approx(b)


def ref_mitchell(a, b):
    if a == 0 or b == 0:
        return 0
    k1, k2 = a.bit_length() - 1, b.bit_length() - 1
    x1, x2 = a / 2 ** k1 - 1, b / 2 ** k2 - 1  # dyadic, exact in float
    log = k1 + k2 + x1 + x2
    char, mant = int(log // 1), log % 1
    return int(2 ** char * (1 + mant))  # piecewise-linear antilog, truncated


def ref_roba(a, b):
    def rnd(x):
        if x == 0:
            return 0
        lo = 1 << (x.bit_length() - 1)
        hi = 2 * lo
        return hi if hi - x <= x - lo else lo  # ties to the larger power
    ar, br = rnd(a), rnd(b)
    return ar * b + a * br - ar * br


def signed_ref(ref):
    def f(a, b):
        s = (-1 if a < 0 else 1) * (-1 if b < 0 else 1)
        return s * ref(abs(a), abs(b))
    return f


SPECIAL = [0, 1, 2, 3, 5, 6, 7, 8, 12, 15, 16, 24, 31, 48, 63, 64, 96, 100, 127, 128, 129, 160,
           191, 192, 200, 224, 254, 255]


def _pairs(signed, n_random=150, seed=0):
    rng = random.Random(seed)
    vals = [v - 128 for v in SPECIAL] + [-128, -127, -1, 0, 1, 127] if signed else SPECIAL
    lo, hi = (-128, 127) if signed else (0, 255)
    pairs = [(a, b) for a in vals for b in vals]
    pairs += [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(n_random)]
    return pairs


FAMILY_CASES = (
    [(f"trunc_{{}}_k{k}", (lambda k: lambda a, b: ref_pp(a, b, lambda i, j: i + j >= k))(k))
     for k in (0, 1, 3, 4, 7, 9, 12, 15)]
    + [(f"bam_{{}}_h{h}_v{v}",
        (lambda h, v: lambda a, b: ref_pp(a, b, lambda i, j: j >= h and i + j >= v))(h, v))
       for h, v in ((0, 0), (1, 3), (2, 4), (3, 3), (4, 8), (2, 10), (7, 15))]
    + [(f"drum_{{}}_k{k}", (lambda k: lambda a, b: ref_drum(a, b, k))(k)) for k in range(1, 9)]
    + [("mitchell_{}", ref_mitchell), ("roba_{}", ref_roba)]
)


@pytest.mark.parametrize("signed", [False, True], ids=["u8", "s8"])
@pytest.mark.parametrize("pattern,ref", FAMILY_CASES, ids=[c[0].format("x") for c in FAMILY_CASES])
def test_family_matches_bit_level_reference(pattern, ref, signed):
    m = M.get(pattern.format("s8" if signed else "u8"))
    assert m.signed == signed
    f = signed_ref(ref) if signed else ref
    for a, b in _pairs(signed):
        assert m.product(a, b) == f(a, b), (m.name, a, b)


@pytest.mark.parametrize("s", ["u8", "s8"])
def test_family_exact_members_and_identities(s):
    for name in (f"trunc_{s}_k0", f"bam_{s}_h0_v0", f"drum_{s}_k8"):
        assert M.get(name).is_exact, name
    for k in (0, 5, 11):  # BAM without a horizontal break is the truncated multiplier
        assert np.array_equal(M.get(f"bam_{s}_h0_v{k}").table, M.get(f"trunc_{s}_k{k}").table)
    assert not M.get(f"drum_{s}_k7").is_exact
    mt = M.metrics(M.get(f"mitchell_{s}"))
    assert mt["WCRE%"] == pytest.approx(100 / 9)  # Mitchell's worst case, x1 = x2 = 1/3 limit
    assert M.metrics(M.get(f"roba_{s}"))["WCRE%"] == pytest.approx(100 / 9)


def test_families_error_signs_and_minus_128():
    e = M.errors(M.get("mitchell_u8"))
    assert e.max() == 0 and e.min() < 0  # Mitchell never overestimates
    assert M.errors(M.get("trunc_u8_k6")).max() == 0
    s = M.get("drum_s8_k4")
    u = M.get("drum_u8_k4")
    # -128 uses the unsigned circuit on magnitude 128 (byte 0x80), sign applied afterwards
    for b in (-128, -77, -1, 0, 1, 100, 127):
        assert s.product(-128, b) == -np.sign(b) * u.product(128, abs(b))
    assert s.product(-128, -128) == u.product(128, 128) == 144 * 144


# --- loaders -------------------------------------------------------------------------------

def test_load_round_trips(tmp_path):
    src = M.get("mul8s_1L2J")
    np.save(tmp_path / "t.npy", src.table)
    np.savez(tmp_path / "one.npz", src.table)
    np.savez(tmp_path / "many.npz", a=src.table, b=M.get("mul8u_2NDH").table)
    np.savetxt(tmp_path / "t.csv", src.table, fmt="%d", delimiter=",")
    np.savetxt(tmp_path / "t.txt", src.table, fmt="%d", header="a comment")
    for spec in ("t.npy", "one.npz", "many.npz:a", "t.csv", "t.txt"):
        m = M.load(tmp_path / spec if ":" not in spec else f"{tmp_path}/{spec}")
        assert np.array_equal(m.table, src.table), spec
        assert m.signed  # inferred from the negative entries
    m = M.load(f"{tmp_path}/many.npz:b", name="mine")
    assert m.name == "mine" and not m.signed and np.array_equal(m.table, M.get("mul8u_2NDH").table)
    assert M.load(tmp_path / "t.npy").name == "t"
    # an unsigned table stays unsigned unless told otherwise
    np.save(tmp_path / "u.npy", M.exact_table(False))
    assert not M.load(tmp_path / "u.npy").signed
    with pytest.warns(RuntimeWarning, match="declared signed"):
        assert M.load(tmp_path / "u.npy", signed=True).signed
    # an 8-bit array cannot hold 8x8 products: most likely they were stored modulo 256
    np.save(tmp_path / "u8.npy", M.exact_table(False).astype(np.uint8))
    with pytest.warns(RuntimeWarning, match="stored as uint8 .* products modulo 256"):
        M.load(tmp_path / "u8.npy", signed=False)


def test_load_callable():
    m = M.load(lambda a, b: a * b, signed=True, name="ex")
    assert m.is_exact and m.signed and m.name == "ex"
    # a = weight value (row), b = activation value (column)
    m = M.load(lambda a, b: (a >> 2 << 2) * b, signed=False)
    assert m.product(7, 3) == 12 and m.product(3, 7) == 0
    d = M.load(lambda a, b: np.sign(a) * np.sign(b) * ((np.abs(a) >> 1 << 1) * np.abs(b)),
               signed=True)
    assert d.product(-3, 5) == -10 and d.product(-128, -128) == 16384
    assert np.array_equal(M.load(lambda a, b: a * b + 0 * a, signed=False).table, M.exact_table(False))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        M.load(tmp_path / "missing.npy")
    np.save(tmp_path / "shape.npy", np.zeros((16, 16), np.int32))
    with pytest.raises(ValueError, match="shape"):
        M.load(tmp_path / "shape.npy")
    np.save(tmp_path / "frac.npy", np.full((256, 256), 0.5))
    with pytest.raises(ValueError, match="non-integer"):
        M.load(tmp_path / "frac.npy")
    np.save(tmp_path / "big.npy", np.full((256, 256), 1 << 20))
    with pytest.raises(ValueError, match="2\\^17"):
        M.load(tmp_path / "big.npy")
    np.save(tmp_path / "str.npy", np.full((256, 256), "x"))
    with pytest.raises(ValueError, match="dtype"):
        M.load(tmp_path / "str.npy")
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="cannot read"):
        M.load(tmp_path / "junk.npy")
    (tmp_path / "bad.csv").write_text("1,2,x\n")
    with pytest.raises(ValueError, match="cannot read"):
        M.load(tmp_path / "bad.csv")
    np.savez(tmp_path / "two.npz", a=M.exact_table(True), b=M.exact_table(True))
    with pytest.raises(ValueError, match="name one"):
        M.load(tmp_path / "two.npz")
    with pytest.raises(KeyError, match="no array 'c'"):
        M.load(f"{tmp_path}/two.npz:c")
    np.save(tmp_path / "neg.npy", M.exact_table(True))
    with pytest.raises(ValueError, match="negative"):
        M.load(tmp_path / "neg.npy", signed=False)
    with pytest.raises(ValueError, match="signed=True or signed=False"):
        M.load(lambda a, b: a * b)
    with pytest.raises(ValueError, match="shape"):
        M.load(lambda a, b: np.zeros(3), signed=False)
    with pytest.raises(ValueError, match="failed"):
        M.load(lambda a, b: 1 / 0, signed=False)
    with pytest.raises(TypeError):
        M.load(42)


# --- catalogue and CLI ---------------------------------------------------------------------

def test_catalogue():
    rows = M.catalogue()
    names = [r["name"] for r in rows]
    assert set(evoapprox.names()) <= set(names)
    assert "trunc_s8_k4" in names and "mitchell_u8" in names
    r = next(r for r in rows if r["name"] == "mul8u_2NDH")
    pub = M.published("mul8u_2NDH")
    assert r["power_mW"] == pub["power_mW"] and r["area_um2"] == pub["area_um2"]
    assert r["MAE%"] == pytest.approx(M.metrics(M.get("mul8u_2NDH"))["MAE%"])
    fam = next(r for r in rows if r["name"] == "drum_u8_k4")
    assert fam["power_mW"] is None and fam["family"] == "drum"
    assert [r["name"] for r in M.catalogue(families=False, extra=["bam_s8_h1_v5"])][-1] == "bam_s8_h1_v5"


def test_cli(tmp_path, capsys):
    out = subprocess.run([sys.executable, "-m", "jaxdepth.multipliers", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--plot" in out and "--show" in out
    assert cli_main(["--signed", "--sort", "MAE%", "--plot", str(tmp_path / "p.png")]) == 0
    text = capsys.readouterr().out
    assert "mul8s_1L2J" in text and "mul8u_2NDH" not in text and "trunc_s8_k4" in text
    assert (tmp_path / "p.png").stat().st_size > 10_000
    assert cli_main(["--show", "mul8s_1KVQ", "--text-heatmap",
                     "--heatmap", str(tmp_path / "h.png")]) == 0
    text = capsys.readouterr().out
    assert "published" in text and "2872" in text and (tmp_path / "h.png").exists()
    np.save(tmp_path / "mine.npy", M.get("roba_s8").table)
    assert cli_main(["--show", str(tmp_path / "mine.npy")]) == 2          # signedness is never guessed
    assert "--signed or --unsigned" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:                                  # and never contradictory
        cli_main(["--signed", "--unsigned"])
    assert stop.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert cli_main(["--show", str(tmp_path / "mine.npy"), "--signed"]) == 0
    assert "mine" in capsys.readouterr().out
    assert cli_main(["--plot", str(tmp_path / "p.png" / "x.png")]) == 2    # --out under a file: checked first
    assert "is a file" in capsys.readouterr().err
    assert cli_main(["--show", "mul8s_1L2K"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_an_unsigned_table_declared_signed_warns(tmp_path):
    """Declared signed but never negative and past any signed product: likely a mix-up, said (not refused)."""
    np.save(tmp_path / "u.npy", M.exact_table(False))
    with pytest.warns(RuntimeWarning, match="declared signed.*65025.*unsigned multiplier"):
        assert M.load(tmp_path / "u.npy", signed=True).signed
    np.save(tmp_path / "s.npy", M.exact_table(True))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.load(tmp_path / "s.npy", signed=True)
        M.load(tmp_path / "u.npy", signed=False)
