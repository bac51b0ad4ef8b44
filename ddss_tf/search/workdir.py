"""A search's work directory: its file names, and the record of its settings and results
(refuse another search's directory, find a finished run, retire results that no longer match).

Work directory (the names below are the only spelling of them):
  config.json          the SearchConfig (a resumed run must match it)
  checkpoints/         tf.train.CheckpointManager: step, sampler variables, Adam state
  tensorboard/         loss, grad norm, periodic FID / KID next to the baselines, sample grids
  samples/*.png        learned samples during training; compare.png (baselines vs learned)
  coefficients.json    the learned sampler (export.write_coefficients)
  export/<version>/    SavedModel (export.export_sampler)
  search_cost.json     the training loop's wall time over every session
  start.json           an "auto" start's screen of the training-free samplers (search.start)
  baselines_*.json     cached scores of the baselines
  results.json / .md   written last: results.json marks a finished run

Every function here only reads, except write_config and retire_results (called under
the work directory's lock).
"""

import json
import os

from ddss_tf import checkpoints, files
from ddss_tf.search.config import SearchConfig

__all__ = ["CONFIG", "CHECKPOINTS", "TENSORBOARD", "SAMPLES", "COMPARE", "COEFFICIENTS",
           "EXPORT", "SEARCH_COST", "START", "RESULTS", "REPORT", "baselines_file", "differing_settings",
           "check_saved_config", "write_config", "read_results", "export_dir",
           "finished_results",
           "finished_search", "retire_results"]

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
SAMPLES = "samples"
COMPARE = os.path.join(SAMPLES, "compare.png")
COEFFICIENTS = "coefficients.json"
EXPORT = "export"
# The training loop's wall time summed over every session of a run (written with each
# checkpoint and when a session ends, so a resumed run adds to it).
SEARCH_COST = "search_cost.json"
START = "start.json"
RESULTS = "results.json"
REPORT = "results.md"


def baselines_file(tag, num_samples):
    """The name of the cache of the baselines' scores (tag: "eval", "final", "final_w<w>")."""
    return f"baselines_{tag}_{num_samples}.json"


def _with_defaults(saved):
    """A config dict read from a work directory, with the defaults of settings added since
    it was written (a run from before the model options keeps resuming), normalised as
    SearchConfig normalises itself (a +PRED saved for a family without it reads False)."""
    if saved is None:
        return None
    # Runs from before `select` kept their last step's coefficients, runs from before
    # `reference` compared with DDPM, and runs from before `clip_samples` scored the raw
    # samples, whatever the defaults now.
    saved = dict(dict(select="last", reference="ddpm", clip_samples=False), **saved)
    # Runs from before `validation_samples` validated on their eval_samples.
    if "validation_samples" not in saved and "eval_samples" in saved:
        saved["validation_samples"] = saved["eval_samples"]
    values = dict(json.loads(SearchConfig().to_json()), **saved)
    try:
        return json.loads(SearchConfig.from_dict(values).to_json())
    except (TypeError, ValueError):  # unknown settings: compared as they are, and differ
        return values


# Settings that change how a run is watched, not the sampler it learns.
_BOOKKEEPING = {"eval_every", "checkpoint_every", "final_samples", "eval_samples",
                "validation_samples", "worker_timeout"}


def differing_settings(saved, cfg, resume=False):
    """Sorted names of the settings in which a saved config dict (config.json, or a
    results.json's "config") learns another sampler than cfg. resume=True: as a resumed run
    sees it (with a constant learning rate, more train_steps continue the same run)."""
    saved = _with_defaults(saved) or {}
    ignore = set(_BOOKKEEPING)
    if cfg.select != "last":  # the periodic validation chooses the coefficients kept
        ignore -= {"eval_every", "validation_samples"}
    if resume and cfg.lr_decay == "constant":  # a cosine schedule's length is part of the trajectory
        ignore.add("train_steps")
    return sorted(k for k, v in json.loads(cfg.to_json()).items()
                  if k not in ignore and saved.get(k) != v)


def check_saved_config(workdir, cfg, log=print):
    """Refuse a work directory that holds another search (read only: nothing is written).

    Its config.json must learn the same sampler; checkpoints without a config.json belong
    to a run no one can name, so they are not resumed (nor overwritten). A config.json that
    cannot be read (damaged, edited, holding NaN) is refused with the way out when checkpoints
    depend on it; a run that never saved a checkpoint starts over (its config.json is
    rewritten), as nothing it did would be lost."""
    path = os.path.join(workdir, CONFIG)
    saved_checkpoints = checkpoints.checkpoint_numbers(os.path.join(workdir, CHECKPOINTS))
    if os.path.exists(path):
        try:
            saved = files.read_json(path, "search config", dict)
        except ValueError as e:
            if saved_checkpoints:
                raise ValueError(f"{e}; the checkpoints beside it need the settings it held: "
                                 f"restore {path}, or move {workdir} away (or give a new "
                                 "--workdir) to start over") from e
            log(f"{path} cannot be used ({' '.join(str(e).split())}); no checkpoint depends "
                "on it, so the search starts over")
            return
        diff = differing_settings(saved, cfg, resume=True)
        if diff:
            raise ValueError(f"{workdir} holds a search with different {', '.join(diff)}; "
                             "use a new --workdir, or the same settings to resume")
    elif saved_checkpoints:
        raise ValueError(f"{workdir}/checkpoints holds checkpoints but {path} is missing, so "
                         "their settings are unknown; restore config.json or use a new --workdir")


def write_config(workdir, cfg):
    """config.json, rewritten only when it changes (a bookkeeping setting), atomically."""
    path = os.path.join(workdir, CONFIG)
    text = cfg.to_json()
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with files.atomic_file(path) as f:
        f.write(text)


def read_results(workdir):
    """The results.json of a finished search in workdir (a dict holding its "config"), or None
    when it has not finished; ValueError naming a damaged file. Its "export" is resolved against
    workdir (results.json holds it relative to the work directory, so a moved or copied
    search points at its own export; files from before held the writer's path, whose last two
    parts, export/<version>, are kept)."""
    path = os.path.join(workdir, RESULTS)
    if not os.path.exists(path):
        return None
    results = files.read_json(path, "results file", dict)
    if not isinstance(results.get("config"), dict):
        raise ValueError(f"{path} holds no search config; it is damaged: move it away")
    if isinstance(results.get("export"), str):
        results["export"] = export_dir(workdir, results["export"])
    return results


def export_dir(workdir, recorded):
    """The export directory a results.json records (`recorded`), in this work directory."""
    if os.path.isabs(recorded):
        recorded = os.path.join(EXPORT, os.path.basename(os.path.normpath(recorded)))
    return os.path.join(workdir, recorded)


def finished_results(workdir, cfg):
    """The results of a finished run with exactly these settings (how long workers wait for
    each other aside), or None: a run asked for more steps or another final evaluation has
    not finished yet (read only)."""
    results = read_results(workdir)
    if results is None:
        return None
    mine = json.loads(cfg.to_json())
    if {k: v for k, v in _with_defaults(results["config"]).items() if k not in _NOT_RESULTS} == \
            {k: v for k, v in mine.items() if k not in _NOT_RESULTS}:
        return results
    return None


def finished_search(workdir, cfg):
    """The results of a finished search in workdir that learned cfg's sampler (bookkeeping
    aside: `differing_settings`), None when none has finished there; ValueError when a
    search with other settings has (the benchmark reuses searches this way)."""
    results = read_results(workdir)
    if results is None:
        return None
    diff = differing_settings(results["config"], cfg)
    if diff:
        raise ValueError(f"{workdir} holds a finished search with different "
                         f"{', '.join(diff)}; give the same settings or another directory")
    return results


_NOT_RESULTS = {"worker_timeout"}


def retire_results(workdir):
    """A finished run asked for more steps or another final evaluation stops looking finished
    until it is: its results are kept as results.previous.*."""
    for name in (RESULTS, REPORT):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            stem, ext = os.path.splitext(name)
            os.replace(path, os.path.join(workdir, f"{stem}.previous{ext}"))
