"""What every search objective is: the `Objective` (its settings, defaults, name, label and
cost) and the `Loss` it builds for one search (what the trainer differentiates).

An objective is what a search minimises by backpropagating through the sampling chain. The
trainer (search.trainer) knows none of them: on every replica it draws the step's x_T and
noise, asks the loss for the step's other inputs (`Loss.inputs`: a real minibatch, labels,
teacher pairs, drawn with the step's key), and differentiates

    L = loss(features, x_T, inputs),   features(x) = phi(sampler(x, z))

with respect to the sampler's variables and the loss's own (`Loss.variables`, e.g. LD3's x_T
offsets). `features` runs the chain from the x_T the loss gives it, so a loss may start the
chain elsewhere than at the step's x_T (from its teacher pairs).

Adding an objective: a module beside this one with an `Objective` subclass and its `Loss`,
and one line in `objectives/__init__.py`'s registry (design.md, "Adding an objective").
"""

from ddss_tf import samplers

__all__ = ["Objective", "Loss", "FEW_STEPS", "ddss_recipe"]

# A KID search at few steps (K <= FEW_STEPS) trains twice as long at twice the learning rate:
# on the bundled model at K = 5 this took FID on 10,000 samples from 3.5x the 1000-step DDPM's
# to 1.7-2.5x over three training seeds (0.80, 1.00, 1.15) in about 8 minutes on 2 cores, where
# 800 steps at the K >= 10 rate made it worse. 3e-2 spread wider (0.58-1.45) and was measured
# at K = 5 only; at K = 10, 2e-2 was worse than 1e-2 (docs/ddss_search.md, "Few steps").
FEW_STEPS = 5


# At K <= CLIPPED_STEPS a DDSS search's loss scores the samples clipped to the data range, as
# the evaluation does (SearchConfig.clip_samples). At K = 3 on the bundled model 39% of the
# start's pixels overshoot [-1, 1] (by up to 2.6), and a loss of the raw samples pulled them in
# at the clipped samples' cost: from DPM-Solver++(2M) linear (3.035 / 0.675, FID / held-out FID
# on 10,000 samples) the clipped loss reached 1.714 / 0.448, where the raw one kept its start
# in every variant tried (seed 0; docs/ddss_search.md, "K = 3, seed 0").
CLIPPED_STEPS = 3


def ddss_recipe(num_steps, batch_size=128):
    """The recipe of a DDSS search (KID, KID + teacher, KID with a control variate) at
    K = num_steps: start from the best training-free sampler (init "auto": search.start) and
    keep a candidate only when it beats that start on paired validation samples (select
    "paired": search.select). At K <= FEW_STEPS 400 steps at 1e-2, validated every 50 on 2,000
    samples. Above, 100 steps at 3e-3 (a fine-tune of a start that is already good), validated
    at steps 50 and 100 on 5,000 samples: there a good candidate improves on the start by about
    10%, which 2,000 paired samples do not resolve (the kid_cv search at K = 10 whose last step
    scored 0.350 against the start's 0.403 on 10,000 samples beat the start in 42% of paired
    resamples of 2,000 validation samples, in 97% of 5,000). At K <= CLIPPED_STEPS the loss
    scores the clipped samples. What each measured: docs/ddss_search.md, "How the defaults
    were chosen"."""
    few = num_steps <= FEW_STEPS
    return dict(init="auto", select="paired", batch_size=batch_size, eval_samples=2000,
                validation_samples=2000 if few else 5000,
                train_steps=400 if few else 100, learning_rate=1e-2 if few else 3e-3,
                eval_every=50, clip_samples=num_steps <= CLIPPED_STEPS)


class Objective:
    """A search objective (stateless: one instance serves every search).

    Class attributes:
      name: the --objective value ("" for the base class, which only gives defaults).
      summary: what it minimises, one line (--objective's help).
      guided: whether it can search a class-conditional model under guidance.
    """

    name = ""
    summary = ""
    guided = False

    # ---- what a search with this objective is ----
    def families(self):
        """The sampler families it learns."""
        return samplers.learnable_names()

    def recipe(self, num_steps):
        """{setting: value} of a search with this objective at K = num_steps that leaves them
        unset (None): its start (init), batch_size, train_steps, learning_rate, which
        coefficients it keeps (select), how often it evaluates (eval_every, eval_samples), on
        how many samples it validates what it keeps (validation_samples) and whether its loss
        scores the samples clipped to the data range (clip_samples). SearchConfig resolves
        its RECIPE_FIELDS from here and prints them at the start."""
        steps, lr = (800, 2e-2) if num_steps <= FEW_STEPS else (400, 1e-2)
        return dict(init="ddim", batch_size=128, train_steps=steps, learning_rate=lr,
                    select=self.default_select(), eval_every=100, eval_samples=512,
                    validation_samples=512, clip_samples=False)

    def default_select(self):
        """Which coefficients a search that does not say keeps (SearchConfig.select): the best
        on validation samples, which at K = 5 took FID on 10,000 samples from 0.80 / 1.00 (the
        last step's, training seeds 0 / 1) to 0.72 / 0.54, held-out FID from 0.34 / 0.40 to
        0.17 / 0.16 (docs/ddss_search.md, "Few steps")."""
        return "best"

    def validate(self, cfg):
        """ValueError naming a setting of `cfg` this objective cannot search with (its own
        fields; the family is checked by `check_family`)."""

    def check_family(self, cfg, others):
        """ValueError unless cfg.family is one this objective learns (`others`: every
        registered objective, named in the message when one of them learns the family)."""
        if cfg.family in self.families():
            return
        if cfg.family not in samplers.names():
            raise ValueError(f"unknown family {cfg.family!r}; accepted: "
                             f"{', '.join(self.families())}")
        elsewhere = [o.name for o in others if cfg.family in o.families()]
        hint = (f"; its query times are learned with objective {' or '.join(elsewhere)} "
                f"(--objective={elsewhere[0]})" if elsewhere else "")
        raise ValueError(f"family {cfg.family!r} has nothing to learn; learnable families: "
                         f"{', '.join(self.families())}{hint}")

    def label(self, cfg, sampler_label):
        """The learned sampler's name in tables, from the DDSS label of its family and options
        (`SearchConfig.label`)."""
        return sampler_label

    # ---- what it costs ----
    def extra_num_steps(self, cfg):
        """Step counts the search samples besides its K (checked against the model's T)."""
        return ()

    def chains_per_sample(self, cfg):
        """K-step chains the loss runs per sample of a training step (1: the searched one;
        a control variate adds the start's, forward only)."""
        return 1

    def network_evaluations(self, cfg):
        """Network evaluations before training (beyond the chain's in the loss)."""
        return 0

    def cost_text(self, cfg):
        """What `network_evaluations` counts, as results.md's sentence continues it ("" for
        nothing)."""
        return ""

    # ---- the search's loss ----
    def loss(self, cfg, evaluator, replicas, log):
        """The `Loss` of a search with `cfg` on evaluator's model, data and feature networks,
        over `replicas` replicas (prepared here: real statistics, teacher pairs; not yet
        built)."""
        raise NotImplementedError


class Loss:
    """One search's loss: what it compares with, its variables, its per-step inputs.

    The trainer calls `build` once in the strategy's scope, then on every replica and step
    `inputs(key, n, step)` outside the compiled gradient and `__call__(features, x_T, inputs)`
    inside it (under the gradient tape).
    """

    guided = False  # whether it runs the chain on a guided model (float32 only)

    def __init__(self, replicas=1):
        self.replicas = int(replicas)
        self.variables = []

    def build(self, layer, seed):
        """Create the loss's own variables (in the caller's strategy scope). layer: the sampler
        searched; seed: the search's training seed."""

    def checkpointed(self):
        """{name: variable} of its variables, saved with the search's checkpoints."""
        return {}

    def inputs(self, key, n, step):
        """A tuple of tensors: one replica's inputs at one step besides its x_T and noise,
        drawn with the stateless `key` (n: the replica's batch)."""
        return ()

    def __call__(self, features, x_T, inputs):
        """The replica's share of the global batch's loss (its all-reduced sum is the loss):
        features(x) -> phi(sampler(x, z)) [n, d] runs the chain."""
        raise NotImplementedError
