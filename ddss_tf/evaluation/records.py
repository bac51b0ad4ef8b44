"""Records of scored samplers (one results.json entry each), tagged by role, and their tables.

The schema, in one place:

  scores (evaluation.Scorer; the caches hold them)   SCORE_KEYS (+ CONDITIONAL_KEYS)
      fid, kid, kid_se, is, heldout_fid, num_samples
  a record (results.json; `record` maps a score dict to one)   RECORD_KEYS (+ CONDITIONAL_KEYS)
      sampler, num_steps, fid, kid, kid_se, is, heldout, num_samples, role
  a benchmark cell's record adds what its sampler cost to learn   COST_KEYS
      search_seconds, search_network_evaluations

The held-out FID is `heldout_fid` in a score dict and `heldout` in a record (both formats are
on disk: the shipped reference caches and every results.json).
"""

__all__ = ["ROLES", "SCORE_KEYS", "METRICS", "RECORD_KEYS", "COST_KEYS", "CONDITIONAL_KEYS",
           "no_cost", "record", "log_scores", "markdown_table", "kid_text", "columns",
           "column_label"]

# What a record is in a comparison: a training-free sampler at the same K, the learned
# sampler, the many-step DDPM reference, or the real data resampled (FID's floor).
ROLES = ("baseline", "learned", "reference", "data")


# A score dict's keys; its metrics (the values a NaN must never reach a table in).
SCORE_KEYS = ("fid", "kid", "kid_se", "is", "heldout_fid", "num_samples")
METRICS = ("fid", "kid", "heldout_fid", "is")
# A record's keys, and a benchmark cell's costs.
RECORD_KEYS = ("sampler", "num_steps", "fid", "kid", "kid_se", "is", "heldout", "num_samples",
               "role")
COST_KEYS = ("search_seconds", "search_network_evaluations")
# Scores of class-conditional samples (evaluation.Scorer with labels), recorded when present.
CONDITIONAL_KEYS = ("class_fid", "class_kid", "heldout_accuracy")


def no_cost():
    """The COST_KEYS of a sampler without a search cost (training-free, or a search finished
    before its cost was recorded): all None."""
    return dict.fromkeys(COST_KEYS)


def record(label, k, scores, role):
    """One results.json record: sampler, num_steps, fid, kid, kid_se, is, heldout,
    num_samples and its role (`ROLES`); for a conditional model's samples also
    `CONDITIONAL_KEYS`."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; accepted: {', '.join(ROLES)}")
    return dict(sampler=label, num_steps=int(k), fid=scores["fid"], kid=scores["kid"],
                kid_se=scores["kid_se"], heldout=scores["heldout_fid"],
                num_samples=scores["num_samples"], role=role,
                **{"is": scores.get("is")},  # None (JSON null) without classifier logits
                **{key: scores[key] for key in CONDITIONAL_KEYS if key in scores})


def log_scores(label, scores, log, note=""):
    """One line: label, FID, KID +- SE, held-out FID."""
    log(f"  {label:<28} FID {scores['fid']:.4f}  KID {kid_text(scores['kid'], scores['kid_se'])}"
        f"  held-out FID {scores['heldout_fid']:.4f}{note}")


def kid_text(kid, kid_se):
    """ "KID +- SE", or "n/a" for a row without KID (the resampled training data)."""
    if kid is None:
        return "n/a"
    return f"{kid:.5f} +- " + ("n/a" if kid_se is None else f"{kid_se:.5f}")


def _num(value, fmt):
    return "n/a" if value is None else format(value, fmt)


def markdown_table(records):
    """Rows: samplers; columns: FID, KID +- SE, IS, held-out FID, and for a conditional model's
    samples per-class FID and the held-out classifier's accuracy on the requested labels."""
    conditional = any("class_fid" in r for r in records)
    extra = " class FID | held-out accuracy |" if conditional else ""
    lines = ["| sampler | K | FID | KID (+- SE) | IS | held-out FID |" + extra,
             "|---|---|---|---|---|---|" + ("---|---|" if conditional else "")]
    for r in records:
        cells = (f" {_num(r.get('class_fid'), '.4f')} | {_num(r.get('heldout_accuracy'), '.3f')} |"
                 if conditional else "")
        lines.append(f"| {r['sampler']} | {r['num_steps']} | {r['fid']:.4f} | "
                     f"{kid_text(r['kid'], r['kid_se'])} "
                     f"| {_num(r['is'], '.3f')} | {r['heldout']:.4f} |" + cells)
    return "\n".join(lines) + "\n"


def columns(records, ks):
    """The columns of a table by K: ks, then the K values only single rows have (all steps),
    then 0 (the data) last."""
    ks = sorted(set(ks))
    extra = {r["num_steps"] for r in records} - set(ks)
    return ks + sorted(extra - {0}) + sorted(extra & {0})


def column_label(k):
    """A table column's name: "K = k", or "data" for the real data (K = 0)."""
    return "data" if k == 0 else f"K = {k}"
