"""Every random draw of a sampling chain, from one integer seed.

Samplers are functions of their inputs (docs/design.md, "How the code reads"): all randomness comes in as
x_T [B, H, W, C] and a noise tensor [K, B, H, W, C] whose slice i is the z drawn
when leaving the i-th visited query time (slice 0 = the noisiest step).

    x_T, noise = noise.draw(seed, K, [B, H, W, C])           # one batch, from one seed
    x_T, noise = noise.draw_batch(seed, b, K, [B, H, W, C])  # batch b of a run of batches
    x_T, noise, key = noise.step_noise(seed, step, replica, K, [B, H, W, C])  # a search step

The one rule for runs of batches: batch b of a run with seed s draws `draw(s + b)`.
The evaluation of searches and benchmarks (seed `EVAL_SEED`), `ddss_sample --seed`
and an export's serving_default (one batch) all follow it, so
`ddss_sample --seed=2000003 --batch_size=500` redraws the x_T and noise of a
search's final evaluation, whose first samples are the rows of its compare.png.
Two runs whose seeds are closer than their number of batches share batches: seeds
meant to be independent should be far apart (e.g. multiples of 2**32).

A seed is an integer in [0, 2**63), or, inside a graph (a SavedModel signature, as TF
Serving clients send it), the int32 pair [hi, lo] standing for hi * 2**32 + (lo mod
2**32) (`seed_pair`). The search's training noise is keyed on (seed, step, replica)
instead (`step_noise`), so its steps never draw an evaluation's noise.
"""

import tensorflow as tf

__all__ = ["draw", "draw_batch", "batch_seed", "seed_pair", "step_key", "step_noise", "EVAL_SEED",
           "VALIDATION_SEED", "MAX_SEED"]

MAX_SEED = 2 ** 63 - 1
# The seed of every evaluation (search and benchmark): the same x_T for every sampler and K.
EVAL_SEED = 2_000_003
# The seed of a search's validation samples (SearchConfig.select = "best"): 2**32 batches
# away from the evaluation's, so the coefficients a search keeps are chosen on other x_T
# than the ones they are scored on.
VALIDATION_SEED = EVAL_SEED + 2 ** 32


def draw(seed, num_steps, shape, dtype=tf.float32):
    """(x_T [B, H, W, C], noise [K, B, H, W, C]), standard normal, from one seed.

    Args:
      seed: an integer in [0, 2**63) (Python int or int scalar tensor), or an int32 [2]
        tensor [hi, lo] (`seed_pair`); the same seed always gives the same draws.
      num_steps: K, a Python int.
      shape: [B, H, W, C]; B may be a scalar tensor (a signature's num_samples).
    Returns:
      tf.random.stateless_normal draws with the keys (s, 0) for x_T and (s, 1) for the
      noise, s the seed as int64.
    """
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    shape = _batch_shape(shape)
    s = _seed_tensor(seed)
    zero, one = tf.constant(0, tf.int64), tf.constant(1, tf.int64)
    x_T = tf.random.stateless_normal(shape, tf.stack([s, zero]), dtype=dtype)
    noise = tf.random.stateless_normal(tf.concat([[int(num_steps)], shape], 0),
                                       tf.stack([s, one]), dtype=dtype)
    return x_T, noise


def batch_seed(seed, index):
    """The seed of batch `index` of a run with seed `seed`: seed + index (the one rule)."""
    seed, index = int(seed), int(index)
    if not 0 <= seed <= MAX_SEED or index < 0 or seed + index > MAX_SEED:
        raise ValueError(f"seed {seed} + batch {index} must be an integer in [0, 2**63)")
    return seed + index


def draw_batch(seed, index, num_steps, shape, dtype=tf.float32):
    """Batch `index` of a run with seed `seed`: draw(seed + index, ...)."""
    return draw(batch_seed(seed, index), num_steps, shape, dtype)


def seed_pair(seed):
    """An integer seed in [0, 2**63) as the int32 pair [hi, lo] a SavedModel signature takes."""
    seed = int(seed)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")
    hi, lo = seed >> 32, seed & 0xFFFFFFFF
    return [hi, lo - 2 ** 32 if lo >= 2 ** 31 else lo]


def step_key(seed, step):
    """The stateless key of one search step, (seed, step): what draws shared by every replica
    are keyed on (each replica's own draws fold in its id, `step_noise`)."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])


def step_noise(seed, step, replica, num_steps, shape):
    """(x_T, noise, key) of one replica at one step of a search, stateless.

    The key is (seed, step) folded with the replica id, so a run is reproducible and a
    resumed run continues the same sequence; `key` seeds the step's other draws (a batch
    of real features).
    """
    key = tf.random.experimental.stateless_fold_in(step_key(seed, step),
                                                   tf.cast(replica, tf.int64))
    k_x, k_z, k_other = tf.unstack(tf.random.experimental.stateless_split(key, 3))
    x_T = tf.random.stateless_normal(shape, k_x)
    noise = tf.random.stateless_normal([num_steps] + list(shape), k_z)
    return x_T, noise, k_other


def _batch_shape(shape):
    """[B, H, W, C] as an int32 tensor, checked where its entries are Python ints."""
    if len(shape) != 4:
        raise ValueError(f"shape must be [B, H, W, C], got {shape}")
    if all(isinstance(s, int) or hasattr(s, "__index__") and not tf.is_tensor(s) for s in shape):
        ints = [int(s) for s in shape]
        if min(ints) < 1:
            raise ValueError(f"shape must be [B, H, W, C] with positive entries, got {ints}")
        return tf.constant(ints, tf.int32)
    return tf.stack([tf.cast(tf.reshape(s, []), tf.int32) for s in shape])


def _seed_tensor(seed):
    """The seed as an int64 scalar tensor; an int32 pair [hi, lo] is hi * 2**32 + (lo mod 2**32)."""
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 1 and seed.shape[0] in (2, None):  # None: a signature's, checked there
        seed = tf.cast(seed, tf.int32)
        hi = tf.cast(seed[0], tf.int64)
        lo = tf.cast(tf.bitcast(seed[1], tf.uint32), tf.int64)
        return hi * (2 ** 32) + lo
    if seed.shape.rank != 0 or not seed.dtype.is_integer:
        raise ValueError(f"seed must be an integer scalar or an int32 pair [hi, lo], got "
                         f"{seed.dtype.name} of shape {seed.shape}")
    return tf.cast(seed, tf.int64)
