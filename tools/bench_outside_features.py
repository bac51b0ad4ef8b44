"""Frechet distances of the bundled digits model's samplers in feature spaces the project never uses.

    PYTHONPATH=. python tools/bench_outside_features.py \
        --coefficients=docs/benchmark/searches/ggdm_pred_time_k5/coefficients.json

Every search, score and selection in this package works in the bundled classifiers' feature
spaces, so a learned sampler could in principle be good only there. This binary scores samples
in three spaces built here, from scikit-learn's digits alone:

- pixels: the 64 pixel values;
- mlp: the 64 tanh units of an sklearn MLPClassifier trained on the 1,797 digits (seeded);
- relu: 256 random ReLU features of the pixels (a seeded Gaussian projection).

For each learned sampler (a coefficients.json, K from the file) and each baseline family at the
same K, it draws --num_samples images through the public sampling API (`ddss_tf.sampling`) on
x_T from --seed (not the evaluation seeds the searches select on) and prints the Frechet
distance to the 1,797 digits in each space, float64 numpy, with the digits themselves
resampled to the same count as the floor. Not a test: a measurement recorded in docs.
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

import numpy as np
from absl import flags

from ddss_tf import progress, sampling

FLAGS = flags.FLAGS
flags.DEFINE_list("coefficients", [], "Learned samplers' coefficients.json files (bundled digits "
                  "model); the baselines run at each file's K.")
flags.DEFINE_list("baselines", ["ddim", "dpm_solver_pp_2m", "unipc", "dpm_solver_pp_2m:quadratic",
                                "unipc:quadratic"],
                  "Training-free samplers as family[:stride] (a family's default stride if none).")
flags.DEFINE_list("num_steps", [], "K of the baselines when no --coefficients is given.")
flags.DEFINE_integer("num_samples", 5000, "Samples per sampler.", lower_bound=2)
flags.DEFINE_integer("seed", 424_242, "Seed of the samplers' noise (ddss_tf.sampling: batch b "
                     "draws seed + b).", lower_bound=0, upper_bound=sampling.MAX_SEED - 1000)

SPACES = ("pixels", "mlp", "relu")


def frechet_distance(a, b):
    """Frechet distance between Gaussians fitted to feature rows a [N, d] and b [M, d], float64.

    tr sqrt(C_a C_b) is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix C_a^1/2 C_b C_a^1/2 (same spectrum), which stays exact when a
    covariance is singular (the digits' border pixels are always 0).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(ca)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = np.linalg.eigvalsh(root_a @ cb @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(ca) + np.trace(cb) - 2 * trace_root)


class OutsideSpaces:
    """The three feature spaces, built from the digits (images in [-1, 1], as ddss_tf.data)."""

    def __init__(self):
        from sklearn.datasets import load_digits
        from sklearn.neural_network import MLPClassifier

        digits = load_digits()
        self.real = digits.data / 8.0 - 1.0
        mlp = MLPClassifier(hidden_layer_sizes=(64,), activation="tanh", max_iter=2000,
                            random_state=1)
        mlp.fit(self.real, digits.target)
        self._mlp = (mlp.coefs_[0], mlp.intercepts_[0])
        rng = np.random.default_rng(7)
        self._relu = (rng.normal(size=(64, 256)) / 8.0, rng.normal(size=256))
        self._reference = self.features(self.real)

    def features(self, images):
        """{space: [N, d] float64} of images [N, 8, 8, 1] (or [N, 64])."""
        x = np.asarray(images, np.float64).reshape(len(images), -1)
        return {"pixels": x,
                "mlp": np.tanh(x @ self._mlp[0] + self._mlp[1]),
                "relu": np.maximum(x @ self._relu[0] + self._relu[1], 0)}

    def distances(self, images):
        mine = self.features(images)
        return {s: frechet_distance(mine[s], self._reference[s]) for s in SPACES}


def _baseline(spec, k):
    family, _, stride = spec.partition(":")
    label = f"{family} {stride}".strip()
    return label, sampling.from_family(family, num_steps=k, **({"stride": stride} if stride else {}))


def _row(name, k, dist):
    return f"| {name} | {k} | " + " | ".join(f"{dist[s]:.4f}" for s in SPACES) + " |"


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    try:
        ks = [int(k) for k in FLAGS.num_steps]
    except ValueError:
        raise cli.UsageError(f"--num_steps must be integers, got {FLAGS.num_steps}") from None
    if FLAGS.coefficients and ks:
        raise cli.UsageError("give --coefficients (K from each file) or --num_steps, not both")
    if not FLAGS.coefficients and not ks:
        raise cli.UsageError("nothing to score: give --coefficients or --num_steps")
    spaces = OutsideSpaces()
    groups = [(None, k) for k in ks]
    groups += [(path, None) for path in FLAGS.coefficients]
    n = FLAGS.num_samples
    lines = [f"Frechet distance to the 1,797 sklearn digits; {n} samples per row, seed "
             f"{FLAGS.seed}", "", "| sampler | K | " + " | ".join(SPACES) + " |",
             "|---|---|" + "---|" * len(SPACES)]
    resampled = spaces.real[np.random.default_rng(FLAGS.seed).integers(0, len(spaces.real), n)]
    lines.append(_row("digits, resampled (the floor)", "", spaces.distances(resampled)))
    print("\n".join(lines), flush=True)
    for path, k in groups:
        sources = []
        if path is not None:
            learned = sampling.from_coefficients(path)
            k = learned.num_steps
            sources.append((f"learned ({path})", learned))
        sources += [_baseline(spec, k) for spec in FLAGS.baselines]
        for name, source in sources:
            bar = progress.Progress(n, desc=f"{name}, K = {k}")
            images, _ = sampling.draw(source, n, seed=FLAGS.seed, progress=bar)
            bar.close()
            line = _row(name, k, spaces.distances(images))
            lines.append(line)
            print(line, flush=True)
    print("\n".join(lines))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
