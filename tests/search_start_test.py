"""The start's screen (search.start): round 1 sends on the best candidates by FID *and* by KID,
round 2 picks the lowest FID on more samples, so a sampler that FID's small-sample bias ranks low
still wins when it is the best; the ranking KID is the unbiased cubic MMD^2 (float64 NumPy
reference); a screen cached before the KID ranking still stands for its work directory."""

import types

import numpy as np
import pytest

from ddss_tf import evaluation, files, metrics, schedules
from ddss_tf.search import start

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _candidates(n):
    """n of the (init, grid) pairs a default search screens, in their own order."""
    pairs = start.candidates("ggdm", True, "", schedules.linear_beta(1000))
    assert len(pairs) >= n
    return pairs[:n]


def test_finalists_are_the_best_by_fid_then_the_best_by_kid_each_once():
    pairs = _candidates(12)
    # FID ranks the pairs 0, 1, ..., 11; KID ranks them 11, 1, 10, 9, ...: the finalists are
    # 0-3 by FID, then 11, 10 and 9 by KID (1 is there already).
    kid = {p: -float(i) for i, p in enumerate(pairs)}
    kid[pairs[1]] = -10.5
    round1 = {p: dict(fid=float(i), kid=kid[p]) for i, p in enumerate(pairs)}
    got = start.finalists(round1, count=4)
    assert got == [pairs[0], pairs[1], pairs[2], pairs[3], pairs[11], pairs[10], pairs[9]]
    assert len(start.finalists({p: dict(fid=1.0, kid=1.0) for p in pairs})) == start.FINALISTS
    # A candidate whose samples were not finite (inf on both) never goes on.
    round1[pairs[11]] = dict(fid=float("inf"), kid=float("inf"))
    assert pairs[11] not in start.finalists(round1, count=4)


class _ScriptedScreen:
    """Round-1 and round-2 scores per candidate, in place of sampling (search.start._scores)."""

    def __init__(self, round1, round2):
        self.round1, self.round2, self.calls = round1, round2, []

    def __call__(self, ev, init, stride, num_steps, num_samples):
        self.calls.append(((init, stride), num_samples))
        if num_samples == start.SCREEN_SAMPLES:
            return self.round1[(init, stride)]
        return dict(fid=self.round2[(init, stride)], kid=0.0)


def _search_and_model(monkeypatch, pairs):
    monkeypatch.setattr(start, "candidates", lambda *a: list(pairs))
    cfg = types.SimpleNamespace(init=start.AUTO, family="ggdm", pred=True, stride="",
                                num_steps=20, eval_samples=2000)
    ev = types.SimpleNamespace(denoiser=types.SimpleNamespace(schedule=schedules.linear_beta(1000)),
                               model_fingerprint="m", inputs_fingerprint={"reference": "r"})
    return cfg, ev


def test_the_best_sampler_wins_though_round_one_fid_ranks_it_last(monkeypatch, tmp_path):
    """The K = 20 case on the bundled model: near a tie FID on 500 samples is bias-dominated
    and put the best sampler 11th of 36; KID (unbiased) ranks it first, so it reaches round 2,
    where it is the best. With FID alone it would not have been screened on."""
    pairs = _candidates(10)
    best = pairs[-1]
    round1 = {p: dict(fid=2.60 + 0.01 * i, kid=-0.001 * (10 - i)) for i, p in enumerate(pairs)}
    round1[best] = dict(fid=2.70, kid=-0.02)  # last by FID, first by KID
    round2 = {p: 0.42 + 0.01 * i for i, p in enumerate(pairs)}
    round2[best] = 0.37
    screen = _ScriptedScreen(round1, round2)
    monkeypatch.setattr(start, "_scores", screen)
    cfg, ev = _search_and_model(monkeypatch, pairs)
    assert best not in sorted(round1, key=lambda p: round1[p]["fid"])[:start.FINALISTS]
    path = str(tmp_path / "start.json")
    chosen = start.resolve(cfg, ev, path, lambda *a: None)
    assert (chosen.init, chosen.stride) == best
    round2_runs = [p for p, n in screen.calls if n == cfg.eval_samples]
    assert best in round2_runs and len(round2_runs) <= start.MAX_FINALISTS
    record = chosen.record
    assert {(r["init"], r["stride"]) for r in record["round2"]} == set(round2_runs)
    assert all(set(r) == {"init", "stride", "fid", "kid"} for r in record["round1"])
    # Cached: a resumed search does not screen again and starts from the same sampler.
    chosen.save(path)
    screen.calls.clear()
    again = start.resolve(cfg, ev, path, lambda *a: None)
    assert (again.init, again.stride) == best and screen.calls == []


def test_a_screen_cached_before_the_kid_ranking_still_stands_for_its_work_directory(
        monkeypatch, tmp_path):
    """A work directory screened by FID alone (key without "ranking") trained from that start:
    it resumes from it. A cached key that differs otherwise (here K) is screened again."""
    pairs = _candidates(3)
    cfg, ev = _search_and_model(monkeypatch, pairs)
    screen = _ScriptedScreen({p: dict(fid=1.0 + i, kid=1.0 + i) for i, p in enumerate(pairs)},
                             {p: 1.0 + i for i, p in enumerate(pairs)})
    monkeypatch.setattr(start, "_scores", screen)
    path = str(tmp_path / "start.json")
    fresh = start.resolve(cfg, ev, path, lambda *a: None)
    assert fresh.init == pairs[0][0]
    old = dict(fresh.record, init=pairs[2][0], stride=pairs[2][1])
    old["key"] = {k: v for k, v in old["key"].items() if k != "ranking"}
    files.write_json(path, old)
    screen.calls.clear()
    resumed = start.resolve(cfg, ev, path, lambda *a: None)
    assert (resumed.init, resumed.stride) == pairs[2]
    assert screen.calls == []
    cfg.num_steps = 10
    screened = start.resolve(cfg, ev, path, lambda *a: None)
    assert (screened.init, screened.stride) == pairs[0]
    assert screen.calls


def _cubic_mmd2_unbiased(x, y):
    """Float64 NumPy: the unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 (Binkowski et al.)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    n, m = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


def test_the_ranking_kid_is_the_unbiased_cubic_mmd_of_all_samples_and_fid_the_scorers():
    rng = np.random.default_rng(0)
    pixels = evaluation.load_extractor("pixels")
    real = rng.uniform(-1, 1, [300, 3, 3, 1]).astype(np.float32)
    flat = real.reshape(len(real), -1).astype(np.float64)
    ref = metrics.reference.Statistics(flat.astype(np.float32), flat.mean(0),
                                       np.cov(flat, rowvar=False), None, "test")
    scorer = evaluation.Scorer(pixels, ref)
    images = np.clip(rng.normal(0.1, 0.5, [120, 3, 3, 1]), -1, 1).astype(np.float32)
    got = scorer.ranking(images)
    want = _cubic_mmd2_unbiased(images.reshape(120, -1), flat)
    assert got["kid"] == pytest.approx(want, rel=1e-4, abs=1e-7)
    assert got["fid"] == pytest.approx(scorer(images)["fid"], rel=1e-9)
    # One block: not the blocked estimate __call__ reports with its standard error.
    assert got["kid"] != pytest.approx(scorer(images)["kid"], rel=1e-6)
