"""Design-space exploration: cost model by hand, selection, store, Pareto front; stored results equal a
direct `jaxdepth-evaluate`; a sweep killed mid-way resumes without evaluating anything twice or losing anything."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxdepth import multipliers
from jaxdepth.explore import (ResultStore, SelectionError, StoreError, flatten, layer_groups, pareto_front,
                              relative_cost, select_layers, select_multipliers, sweep_configs)

DATA = "synthetic:4:7:64x64"


def test_power_model_on_a_hand_computed_case():
    k8, ac = multipliers.get("mul8s_1KV8"), multipliers.get("mul8u_2AC")
    # published: mul8s_1KV8 0.422 mW / 711.0 um2 / 1.48 ns, mul8u_2AC 0.311 / 508.3 / 1.39, reference
    # mul8s_1KV6 (exact signed) 0.425 / 729.8 / 1.48
    c = relative_cost([(100, k8), (300, ac)])
    assert c["power"] == pytest.approx((100 * 0.422 + 300 * 0.311) / (400 * 0.425))     # 0.797058...
    assert c["area"] == pytest.approx((100 * 711.0 + 300 * 508.3) / (400 * 729.8))
    assert c["delay"] == pytest.approx(1.48 / 1.48)                                       # worst multiplier
    # float layers pay a 32-bit float multiplier: 3.7 pJ / 0.2 pJ (Horowitz 2014) of int8's power
    c = relative_cost([(100, k8), (300, None), (600, ac)])
    assert c["power"] == pytest.approx((100 * 0.422 + 300 * 18.5 * 0.425 + 600 * 0.311) / (1000 * 0.425))
    assert c["delay"] is None
    assert relative_cost([(5, multipliers.get("int8"))])["power"] == pytest.approx(1.0)
    assert relative_cost([(5, multipliers.get("exact_u8"))])["power"] == pytest.approx(0.391 / 0.425)
    assert relative_cost([(5, multipliers.get("trunc_u8_k4"))])["power"] is None      # no published figure


def test_multiplier_selection_terms_and_errors(tmp_path):
    names = [m.name for m in select_multipliers(["mul8s_1L*"])]
    assert names == ["mul8s_1L12", "mul8s_1L2J", "mul8s_1L2L", "mul8s_1L2N"]
    cheap = select_multipliers(["signed", "power < 0.3 mW", "MAE% < 0.5"])
    assert cheap and all(m.signed and m.power_mw < 0.3 and multipliers.metrics(m)["MAE%"] < 0.5 for m in cheap)
    assert {m.name for m in cheap} == {"mul8s_1KXF", "mul8s_1L2L", "mul8s_1KX5"}
    only_filters = select_multipliers(["power<=0.0017"])
    assert {m.name for m in only_filters} == {"mul8u_17MN", "mul8u_1SX", "mul8u_TD3"}
    assert [m.name for m in select_multipliers(["trunc"])][:2] == ["trunc_u8_k2", "trunc_u8_k4"]
    table = multipliers.get("mul8u_2AC").table
    np.save(tmp_path / "mine.npy", table)
    with pytest.raises(SelectionError, match="--signed"):
        select_multipliers([str(tmp_path / "mine.npy")])
    mine = select_multipliers([str(tmp_path / "mine.npy")], signed=False)[0]
    assert not mine.signed and np.array_equal(mine.table, table)
    for bad, match in (("mul8u_NOPE", "unknown multiplier"), ("mul9*", "matches no circuit"),
                       ("power ~ 3", "cannot read filter"), ("speed < 3", "cannot read filter"),
                       ("power < 0", "selects no circuit")):
        with pytest.raises(SelectionError, match=match):
            select_multipliers([bad])
    layers = ["encoder.conv0", "encoder.block1.conv", "decoder.up1.convA", "decoder.conv3"]
    assert select_layers(["decoder.*"], layers) == ["decoder.up1.convA", "decoder.conv3"]
    with pytest.raises(SelectionError, match="match no layer"):
        select_layers(["decoder.up9*"], layers)
    # one glob / one term as a plain string is that one item (not its characters: 'd', 'e', ..., '*')
    assert select_layers("decoder.*", layers) == ["decoder.up1.convA", "decoder.conv3"]
    assert [m.name for m in select_multipliers("mul8u_NLX")] == ["mul8u_NLX"]
    nlx = multipliers.get("mul8u_NLX")
    assert sweep_configs([nlx], "decoder.*")[-1].rules == (("decoder.*", nlx),)
    # a configuration whose glob matches no layer is an error, not a float row labelled mul8u_NLX
    with pytest.raises(ValueError, match=r"'decoder.up1.conva' match no layer .*did you mean 'decoder.up1.convA'"):
        sweep_configs([nlx], ["decoder.up1.conva"])[-1].resolve(layers)
    assert layer_groups(layers, "blocks") == {"encoder.conv0": ["encoder.conv0"],
                                              "encoder.block1": ["encoder.block1.conv"],
                                              "decoder.up1": ["decoder.up1.convA"], "decoder.conv3": ["decoder.conv3"]}
    assert list(layer_groups(layers, "parts")) == ["encoder", "decoder"]


def test_a_closed_store_leaves_only_its_file(tmp_path):
    """Checked (a read-only look at its tables) and reopened, then closed: SQLite's -wal / -shm files go."""
    from jaxdepth.explore.store import check_path
    path = tmp_path / "results.sqlite"
    with ResultStore(path) as store:
        store.put("k", "c", {"a": 1})
    with ResultStore(check_path(path)) as store:
        assert len(store.records()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_store_keeps_records_and_refuses_an_unwritable_path(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as st:
        st.put("k1", "ctx", {"label": "a", "kind": "sweep", "fidelity": {"psnr": float("inf")}})
        st.put("k1", "ctx", {"label": "again", "kind": "sweep"})     # first write wins
        assert st.get("k1")["label"] == "a" and st.get("k1")["fidelity"]["psnr"] == float("inf")
        assert st.count("ctx") == 1 and [k for k, _ in st.evaluation_log()] == ["k1", "k1"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        ResultStore(tmp_path / "file" / "r.sqlite")


@pytest.mark.parametrize("content", [b"x", b"", b"not a database at all"])
def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(tmp_path, capsys, content):
    from jaxdepth.cli.explore import main
    path = tmp_path / "one.txt"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a results store"):
        ResultStore(path)
    for argv in (["report"], ["sweep", "--multipliers", "mul8u_2AC", "--data", DATA, "--no-progress"]):
        code = main([*argv, "--out", str(tmp_path / "o"), "--store", str(path)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and f"--store {path}: not a results store" in err
        assert path.read_bytes() == content and not (tmp_path / "o").exists()
    with ResultStore(tmp_path / "r.sqlite"):          # a real store is reopened
        pass
    with ResultStore(tmp_path / "r.sqlite") as st:
        assert st.count() == 0
    import sqlite3
    other = tmp_path / "other.db"                     # someone else's database is not added to
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE invoices (n)")
    before = other.read_bytes()
    with pytest.raises(StoreError, match="database of something else .*invoices"):
        ResultStore(other)
    assert other.read_bytes() == before


def test_pareto_front_is_non_dominated():
    rng = np.random.default_rng(0)
    rows = [{"label": f"c{i}", "kind": "sweep", "power": float(p), "delta1": float(d)}
            for i, (p, d) in enumerate(zip(rng.uniform(0, 1, 60), rng.uniform(0, 1, 60)))]
    front = pareto_front(rows, "delta1", "power")
    for f in front:
        assert not any(r["power"] <= f["power"] and r["delta1"] >= f["delta1"] and
                       (r["power"] < f["power"] or r["delta1"] > f["delta1"]) for r in rows)
    off = [r for r in rows if r not in front]
    assert all(any(f["power"] <= r["power"] and f["delta1"] >= r["delta1"] for f in front) for r in off)
    assert [f["power"] for f in front] == sorted(f["power"] for f in front)
    lower = pareto_front([dict(r, abs_rel=r["delta1"]) for r in rows], "abs_rel", "power")  # lower is better
    assert lower[0]["power"] == min(r["power"] for r in rows)
    with pytest.raises(ValueError, match="no row has the metric 'delta_1'; numeric columns: delta1, power"):
        pareto_front(rows, "delta_1", "power")
    with pytest.raises(ValueError, match="no row has the cost 'pwr'"):
        pareto_front(rows, "delta1", "pwr")
    assert pareto_front([], "delta_1") == []


# ---- with a tiny DenseDepth checkpoint (22 QConv layers, 64x64) -------------------------------------------
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from jaxdepth import models
    from jaxdepth.io import checkpoint
    p = models.get_preset("densenet121", growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16, bn_size=1,
                          input_size=(64, 64), decoder_width=1.0)
    model = models.build(p)
    path = tmp_path_factory.mktemp("explore") / "tiny"
    checkpoint.save(path, p, models.init_variables(model, 0))
    return path


@pytest.fixture(scope="module")
def tiny_ev(tiny_ckpt):
    from jaxdepth.explore import EvalSpec, Protocol
    return EvalSpec(model=str(tiny_ckpt), data=DATA, protocol=Protocol(batch_size=2, calib_frames=2)).build()


@pytest.mark.slow
def test_stored_results_equal_a_direct_evaluate(tiny_ckpt, tiny_ev, tmp_path):
    from jaxdepth.cli import evaluate as cli_evaluate
    from jaxdepth.explore import run_configs, sweep_configs
    configs = sweep_configs([multipliers.get("mul8u_197B")], ["*"], references=False)
    with ResultStore(tmp_path / "r.sqlite") as st:
        run_configs(tiny_ev, st, configs)
        stored = st.records()[0]
    args = cli_evaluate.build_parser().parse_args(
        ["--model", str(tiny_ckpt), "--data", DATA, "--multiplier", "mul8u_197B",
         "--batch-size", "2", "--calib-frames", "2", "--no-progress"])
    direct = cli_evaluate.run(args)
    assert stored["frames"] == direct["frames"] == 4
    for part in ("accuracy", "reference_accuracy", "fidelity"):
        for k, v in direct[part].items():
            assert stored[part][k] == pytest.approx(v, rel=1e-5, abs=1e-7), (part, k)
    assert 0 < stored["fidelity"]["depth_rel_rms"] < 1 and 0 < stored["fidelity"]["decoder_rel_rms"] < 1
    assert set(stored["plan"].values()) == {"mul8u_197B"}


@pytest.mark.slow
def test_compensated_results_equal_a_direct_evaluate_with_compensate(tiny_ckpt, tiny_ev, tmp_path):
    """Explore's runtime tables with offsets in the lut collection give what `evaluate --compensate` gives with
    the table fixed in the plan (offsets in the quant collection); the store keeps them apart."""
    import dataclasses

    from jaxdepth.cli import evaluate as cli_evaluate
    from jaxdepth.explore import EvalSpec, Protocol, run_configs, sweep_configs
    comp_ev = EvalSpec(model=str(tiny_ckpt), data=DATA,
                       protocol=Protocol(batch_size=2, calib_frames=2, compensate=True)).build()
    assert comp_ev.context != tiny_ev.context
    configs = sweep_configs([multipliers.get("mul8u_NLX")], ["*"], references=False)
    assert comp_ev.key(configs[0]) != tiny_ev.key(configs[0])
    with ResultStore(tmp_path / "r.sqlite") as st:
        stored = run_configs(comp_ev, st, configs)[0]
        plain = run_configs(tiny_ev, st, configs)[0]
    args = cli_evaluate.build_parser().parse_args(
        ["--model", str(tiny_ckpt), "--data", DATA, "--multiplier", "mul8u_NLX", "--compensate",
         "--batch-size", "2", "--calib-frames", "2", "--no-progress"])
    direct = cli_evaluate.run(args)
    for part in ("accuracy", "fidelity"):
        for k, v in direct[part].items():
            assert stored[part][k] == pytest.approx(v, rel=1e-5, abs=1e-7), (part, k)
    assert stored["fidelity"]["psnr"] != plain["fidelity"]["psnr"]
    # a store made before the field existed keeps its keys: the uncompensated context omits it
    old = {"description": tiny_ev.description, "protocol": {k: v for k, v in dataclasses.asdict(tiny_ev.protocol).items()
                                                            if k != "compensate"}, "version": 1}
    from jaxdepth.explore.store import digest
    assert tiny_ev.context == digest(old)


@pytest.mark.slow
def test_sensitivity_ranking_and_error_propagation(tiny_ev, tmp_path):
    from jaxdepth.explore import layer_groups, run_configs
    from jaxdepth.explore.sensitivity import propagation, rank, saturation, sensitivity_configs
    m = multipliers.get("mul8u_L93")
    configs = sensitivity_configs(m, layer_groups(tiny_ev.layer_names, "parts"))
    assert [c.label for c in configs] == ["uint8", "mul8u_L93 @ encoder", "mul8u_L93 @ decoder"]
    with ResultStore(tmp_path / "r.sqlite") as st:
        recs = run_configs(tiny_ev, st, configs)
    ranking = rank(recs, "psnr")
    base = recs[0]["fidelity"]["psnr"]
    assert {r["group"] for r in ranking} == {"encoder", "decoder"}
    assert all(r["drop"] == pytest.approx(base - r["psnr"]) for r in ranking)
    assert ranking[0]["drop"] >= ranking[1]["drop"]
    # propagation: the last layer's error is the decoder output's relative rms that the evaluation stored
    # (same 4 frames, unflipped), computed independently; every layer is listed, in model order
    rows = propagation(tiny_ev, configs[2], frames=4)
    assert [r["layer"] for r in rows] == tiny_ev.layer_names
    assert [r["multiplier"] for r in rows] == [m.name if n.startswith("decoder.") else "exact_u8"
                                               for n in tiny_ev.layer_names]
    assert rows[-1]["rel_error"] == pytest.approx(recs[2]["fidelity"]["decoder_rel_rms"], rel=1e-4)
    assert all(r["rel_error"] > 0 and r["std_ratio"] > 0 for r in rows)
    assert set(saturation(rows)) == {"enters", "blows_up", "collapses"}


@pytest.mark.slow
def test_search_returns_a_non_dominated_front_and_resumes(tiny_ev, tmp_path):
    from jaxdepth.explore import layer_groups
    from jaxdepth.explore.search import front, search
    cands = [multipliers.get(n) for n in ("mul8u_197B", "mul8u_2AC", "mul8u_L93")]
    groups = layer_groups(tiny_ev.layer_names, "parts")
    with ResultStore(tmp_path / "r.sqlite") as st:
        recs = search(tiny_ev, st, cands, groups, n_trials=8, population=4, ranking=["decoder", "encoder"])
        evaluated = len(st.evaluation_log())
        assert len(recs) == 8 and evaluated <= 8
        again = search(tiny_ev, st, cands, groups, n_trials=11, population=4)    # resume: 3 more trials
        assert len(again) == 11 and len(st.evaluation_log()) - evaluated <= 3
        log = [k for k, _ in st.evaluation_log()]
    assert len(log) == len(set(log))
    rows = [flatten(r) for r in again]
    best = front(again, "delta1")
    assert best
    for b in best:
        assert not any(r["power"] <= b["power"] and r["delta1"] >= b["delta1"] and
                       (r["power"] < b["power"] or r["delta1"] > b["delta1"]) for r in rows)
    assert all(all(m in ("exact_u8", "mul8u_197B", "mul8u_2AC", "mul8u_L93") for m in r["plan"].values())
               for r in again)
    with pytest.raises(ValueError, match="signedness"):
        search(tiny_ev, st, [multipliers.get("mul8s_1L2J"), cands[0]], groups, n_trials=1)


def _cli(*args, out):
    return [sys.executable, "-m", "jaxdepth.explore", *args, "--out", str(out), "--no-progress"]


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_reevaluating_or_losing(tiny_ckpt, tmp_path):
    circuits = ["mul8u_2AC", "mul8u_197B", "mul8u_L93", "mul8u_DM1", "mul8u_GTR", "mul8u_NLX", "mul8u_QJD",
                "mul8u_R92", "mul8u_XFM", "mul8u_ZFB", "mul8u_C67", "mul8u_DG8"]
    cmd = _cli("sweep", "--model", str(tiny_ckpt), "--data", "synthetic:8:7:64x64", "--batch-size", "2",
               "--calib-frames", "2", "--multipliers", *circuits, out=tmp_path)
    env = dict(os.environ, JAXDEPTH_COMPILE_CACHE="0")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    db = tmp_path / "results.sqlite"
    t0 = time.time()
    stored = 0
    while proc.poll() is None and time.time() - t0 < 300:
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.Error:
                stored = 0
            if stored >= 4:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    total = len(circuits) + 2                       # + float and uint8 reference rows
    with ResultStore(db) as st:
        before = {k for k, _ in st.evaluation_log()}
    assert 4 <= len(before) < total, "the sweep was not killed mid-way"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{total - len(before)} configuration(s) evaluated, {len(before)} read" in done.stdout
    with ResultStore(db) as st:
        log = [k for k, _ in st.evaluation_log()]
        labels = {r["label"] for r in st.records()}
    assert len(log) == len(set(log)) == total        # each configuration evaluated exactly once
    assert labels == {"float", "uint8", *circuits}
    assert (tmp_path / "sweep.csv").read_text().count("\n") == total + 1


@pytest.mark.parametrize("argv, message, reads_data", [
    (["sweep", "--multipliers", "mul8u_NOPE"], "unknown multiplier", False),
    (["sweep", "--multipliers", "mul9*"], "matches no circuit", False),
    (["sweep", "--multipliers", "mul8u_2AC", "--layers", "decoder.up9*"], "match no layer", False),
    (["sweep", "--multipliers", "mul8u_2AC", "--metric", "speed"], "--metric", False),
    (["sweep", "--multipliers", "mul8u_2AC", "--ray", "bogus"], "--ray bogus: not a Ray address", False),
    (["sweep", "--multipliers", "mul8u_2AC", "--ray", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1",
     False),
    (["sweep", "--multipliers", "mul8u_2AC", "--data", "BAD.npz"], "BAD.npz", True),
    (["sweep", "--multipliers", "mul8u_2AC", "--format", "nosuchformat"], "nosuchformat", True),
    (["sensitivity", "--multiplier", "mul8u_2AC", "--layers", "nomatch*"], "match no layer", False),
    (["propagate", "--multiplier", "mul8u_2AC", "--layers", "nomatch*"], "match no layer", False),
    (["propagate", "--multiplier", "mul8u_2AC", "--layers", "decoder.*", "--ray", "auto"],
     "propagate does not use --ray", False),
    (["search", "--multipliers", "mul8u_2AC", "--population", "1"], "--population 1", False),
    (["search", "--multipliers", "exact_u8"], "at least one approximate candidate", False),
    (["search", "--multipliers", "mul8u_2AC", "--ranking", "{tmp}/rank.txt"],
     "--ranking {tmp}/rank.txt: unknown groups ['nosuch']", False),
    (["search", "--multipliers", "mul8u_2AC", "--ranking", "{tmp}/corrupt.png"],
     "--ranking {tmp}/corrupt.png: not a text file; expected group names", False),
])
def test_bad_input_is_a_clear_error_before_any_work(tiny_ckpt, tmp_path, capsys, monkeypatch, argv, message,
                                                    reads_data):
    """One line, exit 2, nothing created, no configuration evaluated; what the model alone can tell (layer
    patterns, ranking groups) is checked before the data is read."""
    import jaxdepth.data
    from jaxdepth.cli.explore import main
    from jaxdepth.explore.evaluator import Evaluator

    def never(*a, **k):
        raise AssertionError("evaluated (or read the data) before checking the input")

    monkeypatch.setattr(Evaluator, "evaluate", never)
    if not reads_data:
        monkeypatch.setattr(jaxdepth.data, "load", never)
    (tmp_path / "rank.txt").write_text("encoder.conv0\nnosuch\n")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    argv, message = [a.format(tmp=tmp_path) for a in argv], message.format(tmp=tmp_path)
    t0 = time.time()
    code = main([argv[0], "--model", str(tiny_ckpt), "--data", DATA, "--out", str(tmp_path / "o"), "--no-progress",
                 *argv[1:]])                                  # the case's own options win
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
    assert time.time() - t0 < 10


@pytest.mark.parametrize("command", ["sweep", "sensitivity", "propagate", "search"])
def test_signed_and_unsigned_together_are_a_usage_error(command, tmp_path, capsys):
    from jaxdepth.cli.explore import main
    mult = ["--multiplier", "t.npy"] if command in ("sensitivity", "propagate") else ["--multipliers", "t.npy"]
    with pytest.raises(SystemExit) as e:
        main([command, *mult, "--signed", "--unsigned", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "not allowed with argument --signed" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_report_without_a_store_creates_nothing(tmp_path, capsys):
    from jaxdepth.cli.explore import main
    code = main(["report", "--out", str(tmp_path / "new")])
    err = capsys.readouterr().err
    assert code == 2 and "no results store at" in err and err.count("\n") == 1
    assert not (tmp_path / "new").exists()
    assert main(["report", "--model", "/nonexistent", "--out", str(tmp_path / "new")]) == 2
    assert "it does not use --model" in capsys.readouterr().err


def test_layer_names_are_known_before_the_data_is_read(tiny_ckpt, tiny_ev):
    from jaxdepth.explore import EvalSpec
    from jaxdepth.explore.evaluator import model_layer_names
    model, _, info = EvalSpec(model=str(tiny_ckpt)).load_model()
    assert model_layer_names(model, info) == tiny_ev.layer_names


def test_unwritable_output_is_reported_before_the_sweep(tiny_ckpt, tmp_path, capsys):
    from jaxdepth.cli.explore import main
    (tmp_path / "file").write_text("x")
    code = main(["sweep", "--multipliers", "mul8u_2AC", "--model", str(tiny_ckpt), "--data", DATA,
                 "--out", str(tmp_path / "file" / "sub"), "--no-progress"])
    assert code == 2 and "file" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_workers_give_the_local_results_and_survive_a_killed_worker(tiny_ckpt, tiny_ev, tmp_path):
    ray = pytest.importorskip("ray")
    from jaxdepth.explore import EvalSpec, Protocol, run_configs, sweep_configs
    from jaxdepth.explore.ray_backend import RayExecutor
    configs = sweep_configs([multipliers.get(n) for n in ("mul8u_2AC", "mul8u_L93", "mul8u_DM1")], ["*"],
                            references=False)
    with ResultStore(tmp_path / "local.sqlite") as st:
        local = run_configs(tiny_ev, st, configs)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)   # a local 2-CPU cluster
    try:
        spec = EvalSpec(model=str(tiny_ckpt), data=DATA, protocol=Protocol(batch_size=2, calib_frames=2))
        try:
            ex = RayExecutor(spec, None, workers=2, expected_context=tiny_ev.context, startup_timeout=600)
        except ray.exceptions.GetTimeoutError:     # Ray's own start-up (raylet, agents) failed on this host
            pytest.skip("the local Ray cluster did not start within 10 minutes (see /tmp/ray/session_latest/logs)")
        assert ray.get([a.threads.remote() for a in ex.actors]) == [1, 1]   # one core each: no oversubscription
        results = ex.run(configs)
        first = next(results)
        ray.kill(ex.actors[0], no_restart=False)        # a worker dies mid-run: restarted, its config resubmitted
        with ResultStore(tmp_path / "ray.sqlite") as st:
            for c, rec in [first, *results]:
                st.put(tiny_ev.key(c), tiny_ev.context, rec)
            remote = {r["label"]: r for r in st.records()}
        ex.shutdown()
    finally:
        ray.shutdown()
    assert set(remote) == {c.label for c in configs}
    for rec in local:
        for part in ("accuracy", "fidelity", "cost"):
            assert remote[rec["label"]][part] == rec[part], (rec["label"], part)


def test_stored_ranges_serve_every_table_of_their_signedness_as_in_evaluate(tmp_path):
    """A checkpoint fine-tuned for an unsigned plan: explore uses its stored ranges for that table and for any
    other unsigned table, as evaluate (`inference.quantized`) does; signed tables, which the checkpoint holds
    no ranges for, are calibrated. Such a checkpoint's results have their own store context."""
    import jax
    from jaxdepth import inference, models
    from jaxdepth.explore import EvalSpec, Protocol
    from jaxdepth.io import checkpoint
    p = models.get_preset("densenet121", growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16, bn_size=1,
                          input_size=(64, 64), decoder_width=1.0)
    plan = {"*": "exact_u8"}
    model = models.build(p, plan=plan)
    rng = np.random.default_rng(3)
    variables = models.calibrate(model, models.init_variables(model, 0), rng.random((2, 64, 64, 3), np.float32))
    # ranges unlike any calibration on the data: the stored ones must come back untouched
    variables["quant"] = jax.tree_util.tree_map(lambda a: np.asarray(a) * 0 + 0.125 if np.asarray(a).dtype.kind == "f"
                                                else a, variables["quant"])
    checkpoint.save(tmp_path / "ft", p, variables, plan=plan)
    ev = EvalSpec(model=str(tmp_path / "ft"), data=DATA, protocol=Protocol(batch_size=2, calib_frames=2)).build()
    leaves = lambda t: [np.asarray(a) for a in jax.tree_util.tree_leaves(t)]  # noqa: E731
    stored = leaves(ev.variables["quant"])
    for name in ("exact_u8", "mul8u_197B"):
        assignment = {n: multipliers.get(name) for n in ev.layer_names}
        assert all(np.array_equal(a, b) for a, b in zip(leaves(ev._quant(assignment)), stored)), name
        _, by_evaluate = inference.quantized(ev.model, ev.variables, {"*": name}, ev._calib)
        assert all(np.array_equal(a, b) for a, b in zip(leaves(by_evaluate["quant"]), stored)), name
    signed = ev._quant({n: multipliers.get("mul8s_1KV8") for n in ev.layer_names})
    assert {k for entry in jax.tree_util.tree_leaves(signed, is_leaf=lambda e: isinstance(e, dict) and
                                                     "x_scale_int8" in e) for k in entry} == {"x_scale_int8",
                                                                                               "x_zero_point_int8"}
    from jaxdepth.explore.evaluator import _has_unsigned_calibration
    assert _has_unsigned_calibration(ev.variables)       # its own store context; signed-only checkpoints keep theirs
    assert not _has_unsigned_calibration({"quant": signed})


@pytest.mark.slow
def test_a_kitti_range_model_is_explored_in_its_own_depth_range(tiny_ev):
    """A densedepth_kitti-range checkpoint: metres = clip(80 / raw, 1, 80), ground truth scored up to 80 m (numpy
    reference, `standin.kitti_expected`); an NYU model's protocol resolves to the former 10 m (same store keys)."""
    from jaxdepth.explore import Protocol
    from jaxdepth.explore.evaluator import Config, Evaluator
    from jaxdepth.explore.store import digest
    from standin import kitti_expected, kitti_frames, kitti_range_densenet
    model, v = kitti_range_densenet()
    rgb, gt = kitti_frames(2)
    ev = Evaluator(model, v, {}, [(rgb, gt, None)], description={"test": "kitti"},
                   protocol=Protocol(batch_size=2, calib_frames=2))
    assert ev.depth_range == (1.0, 80.0) and ev.protocol.max_depth == 80.0
    rec = ev.evaluate(Config("float", (("*", None),)))
    for k, w in kitti_expected(model, v, rgb, gt).items():
        assert rec["accuracy"][k] == pytest.approx(w, rel=2e-4, abs=1e-6), k
    assert rec["warning"] is None
    assert tiny_ev.protocol.max_depth == 10.0
    import dataclasses
    protocol = dataclasses.asdict(Protocol(batch_size=2, calib_frames=2, max_depth=10.0))
    del protocol["compensate"]             # added later; uncompensated stores keep the keys they had before it
    assert tiny_ev.context == digest({"description": tiny_ev.description, "protocol": protocol, "version": 1})
