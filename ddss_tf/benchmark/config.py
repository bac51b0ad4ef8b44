"""BenchmarkConfig: which rows, at which K, on how many samples, with which searches."""

import dataclasses
from typing import Optional

from ddss_tf.benchmark.rows import ROWS, LearnedRow, default_samplers, sampler_names
from ddss_tf.search.config import RECIPE_FIELDS, SearchConfig, default_settings

__all__ = ["BenchmarkConfig"]


@dataclasses.dataclass
class BenchmarkConfig:
    """What to evaluate.

    search: the template of every search: model, data, feature networks and the
      optimisation settings of the learned rows (family, pred, time, K, train_steps and
      learning_rate are set per row; its final_samples is the search's own final evaluation,
      not the benchmark's).
    train_steps, learning_rate, batch_size: of every learned row's search; None: ddss_search's
      default at the row's K and objective (`search.default_settings`: every setting of a
      search's recipe is set per row).
    row_settings: SearchConfig fields every learned row's search takes, over its recipe and
      the row's own settings (e.g. dict(eval_samples=16) for a quick table).
    searches: directory of the learned rows' search work directories ("" = workdir/searches).
    only_searched: learned rows fill only the K whose search in `searches` has finished; the
      other cells are skipped (and left empty in the table) instead of searched there first.
    num_samples: samples per cell. FID's upward bias shrinks as this grows: on the bundled
      digits, the training images themselves score 0.65 at 2,000 and 0.13 at 10,000, so at
      2,000 the bias is as large as the differences between the better samplers.
    """
    samplers: tuple = default_samplers()
    num_steps: tuple = (3, 4, 5, 10, 20)
    num_samples: int = 10000
    searches: str = ""
    only_searched: bool = False
    # The anchor scales of the row ggdm_pred_time_across (a conditional model).
    guidance_anchors: tuple = (0.0, 1.0, 3.0)
    train_steps: Optional[int] = None
    learning_rate: Optional[float] = None
    batch_size: Optional[int] = None
    row_settings: dict = dataclasses.field(default_factory=dict)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)

    def validate(self):
        unknown = [s for s in self.samplers if s not in ROWS]
        if unknown or not self.samplers:
            raise ValueError(f"unknown samplers {unknown or '(none given)'}; accepted: "
                             f"{', '.join(sampler_names())}")
        if not self.num_steps or any(int(k) != k or k < 1 for k in self.num_steps):
            raise ValueError(f"num_steps must be a non-empty list of integers >= 1, got "
                             f"{list(self.num_steps)}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (KID needs two samples), got "
                             f"{self.num_samples}")
        self.search.validate()
        flow_rows = [s for s in self.samplers if getattr(ROWS[s], "flow_only", False)]
        if flow_rows and self.search.prediction != "flow":
            raise ValueError(f"rows {', '.join(flow_rows)} are a rectified-flow model's "
                             f"(prediction flow); this model predicts {self.search.prediction}")
        scale = self.search.guidance_scale
        if isinstance(scale, (list, tuple)):
            raise ValueError(f"a benchmark runs at one guidance scale, got {list(scale)}; the row "
                             "ggdm_pred_time_across is the sampler across guidance_anchors "
                             "(run one benchmark per scale, sharing its searches directory)")
        across = [s for s in self.samplers if getattr(ROWS[s], "conditional_only", False)]
        if across and scale is None:
            raise ValueError(f"rows {', '.join(across)} take a conditional model (a guidance "
                             "scale)")
        if across:
            dataclasses.replace(self.search, guidance_scale=list(self.guidance_anchors)).validate()
        recipe = default_settings(self.search.num_steps, self.search.objective)
        given = [name for name in RECIPE_FIELDS if getattr(self.search, name) != recipe[name]]
        if given:
            raise ValueError(f"{', '.join(given)} are set per row (each K has its default): "
                             "give them as the BenchmarkConfig's (train_steps, learning_rate, "
                             "batch_size, row_settings), not its search template's")
        unknown = sorted(set(self.row_settings) - {f.name for f in dataclasses.fields(
            SearchConfig)})
        if unknown:
            raise ValueError(f"row_settings: unknown search settings {unknown}")

    def rows_search(self, name, k, searches=""):
        """The SearchConfig of the learned row `name` (`sampler_names()`) at K = k (searches:
        the benchmark's searches directory, for a row that starts from others' searches)."""
        row = ROWS.get(name)
        if not isinstance(row, LearnedRow):
            learned = [n for n, r in ROWS.items() if isinstance(r, LearnedRow)]
            raise ValueError(f"{name!r} is not a learned row; learned rows: {', '.join(learned)}")
        return row.search_config(self, k, searches)
