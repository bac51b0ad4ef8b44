"""Family names -> sampler layers, with the options each family accepts.

    samplers.create(name, denoiser, num_steps=10, stride=None, eta=None, pred=None,
                    time=False, init=None, variance=None, remat=True, loop=False)

Options that do not apply to a family raise ValueError rather than being ignored:
  eta       "ddim" only (default 0.0)
  variance  "ddpm" only: "small" (beta_tilde, default) | "large" (beta')
  pred      "ggdm" only (+PRED)
  init      learnable families: "ddim_sigma", "rddim", "ggdm" take "ddpm" (default) |
            "ddim"; "vars" takes "ddpm"; "ggdm" with pred=True also any of `solver_names()`
  time      every family (+TIME: learn the query times)
  stride    every family; None = the family's default ("quadratic"; "logsnr_uniform" for
            "dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc", "unipc_3"; "edm" for "ipndm"); on
            a rectified-flow schedule "flow_euler", the solvers' "flow_sigmas", "edm" for
            "ipndm" (`times`)
  loop      every family but the multistep solvers (`solver_names()`): run the
            chain as a tf.while_loop (XLA compiles the network once whatever K)
  guidance_scales  families with variables (learnable, or time=True): coefficients that
            depend on the guidance scale, interpolated between these anchors (samplers.base)
"""

from ddss_tf.samplers import ddim
from ddss_tf.samplers import ddim_sigma
from ddss_tf.samplers import ddpm
from ddss_tf.samplers import dpm_solver
from ddss_tf.samplers import dpm_solver_3m
from ddss_tf.samplers import ggdm
from ddss_tf.samplers import ipndm
from ddss_tf.samplers import rddim
from ddss_tf.samplers import unipc
from ddss_tf.samplers import unipc_3
from ddss_tf.samplers import variances

__all__ = ["create", "names", "family", "from_config", "learnable_names", "solver_names",
           "options", "inits", "loopable", "default_stride", "label", "COMMON_OPTIONS"]

# name: (layer class, its own options, learnable, label in tables, solver). A solver is a
# training-free multistep ODE solver, linear in the states and data predictions, that a GGDM
# can be written from (init=<solver>, `ggdm.solver_form`).
_FAMILIES = {
    "ddpm": (ddpm.DDPM, ("variance",), False, "DDPM", False),
    "ddim": (ddim.DDIM, ("eta",), False, "DDIM", False),
    "ddim_sigma": (ddim_sigma.DDIMSigma, ("init",), True, "DDIM-sigma", False),
    "vars": (variances.VARS, ("init",), True, "VARS", False),
    "rddim": (rddim.RDDIM, ("init",), True, "Relaxed DDIM", False),
    "ggdm": (ggdm.GGDM, ("init", "pred"), True, "GGDM", False),
    "dpm_solver_pp_2m": (dpm_solver.DPMSolverPP2M, (), False, "DPM-Solver++(2M)", True),
    "dpm_solver_pp_3m": (dpm_solver_3m.DPMSolverPP3M, (), False, "DPM-Solver++(3M)", True),
    "unipc": (unipc.UniPC, (), False, "UniPC", True),
    "unipc_3": (unipc_3.UniPC3, (), False, "UniPC-3", True),
    "ipndm": (ipndm.IPNDM, (), False, "iPNDM", True),
}
ggdm.set_solvers({name: row[0] for name, row in _FAMILIES.items() if row[4]})
# The options every family takes.
COMMON_OPTIONS = ("num_steps", "stride", "time", "remat", "loop")


def names():
    """Every family name `create` accepts."""
    return sorted(_FAMILIES)


def learnable_names():
    """The families with coefficients to learn (a search's families); the others are
    training-free (though any family learns its query times with time=True)."""
    return [name for name in names() if _FAMILIES[name][2]]


def solver_names():
    """The training-free multistep solvers, in registry order: the families a GGDM can start
    from (its init values beyond "ddpm" and "ddim")."""
    return [name for name, row in _FAMILIES.items() if row[4]]


def family(name):
    """The layer class of a family name."""
    return _FAMILIES[_known(name)][0]


def options(name):
    """The family's own options (`create` refuses the others), e.g. ("init", "pred") for ggdm."""
    return _FAMILIES[_known(name)][1]


def default_stride(name, flow=False):
    """The family's initial query times when none are given (`create`'s stride=None); flow:
    on a rectified-flow schedule."""
    cls = family(name)
    return cls.flow_stride if flow else cls.default_stride


def loopable(name):
    """Whether the family's chain can run as one tf.while_loop (`create`'s loop=True)."""
    return family(name).loopable


def inits(name):
    """The baselines a learnable family can start from (its `init` values; () for the others)."""
    return tuple(getattr(family(name), "inits", ()))


def label(name):
    """The family's name in tables, e.g. "GGDM", "DDIM-sigma"."""
    return _FAMILIES[_known(name)][3]


def _known(name):
    if name not in _FAMILIES:
        raise ValueError(f"unknown sampler family {name!r}; accepted: {', '.join(names())}")
    return name


def create(name, denoiser, num_steps=10, stride=None, eta=None, pred=None, time=False,
           init=None, variance=None, remat=True, loop=False, guidance_scales=None,
           **layer_kwargs):
    """Build a K-step sampler layer of family `name` over a canonical denoiser.

    Args:
      name: one of `names()`.
      denoiser: a `denoisers.Denoiser`.
      num_steps: K in [1, T], the number of network evaluations.
      stride: initial query times (`times.stride_names()`), None for the family default.
      eta, pred, init, variance: family options (None = not given; see module doc).
      time: learn the query times (+TIME).
      remat: wrap every network call in tf.recompute_grad (memory flat in K).
      loop: run the chain as one tf.while_loop (compile time flat in K; see samplers.base).
      guidance_scales: anchor scales w_1 < ... < w_n of coefficients that depend on the
        guidance scale (samplers.base; a family with something to learn).
      **layer_kwargs: Keras layer arguments (name is taken by the family: use `layer_name`).
    Returns:
      A `base.Sampler` Keras layer: layer(x_T, noise) -> x0.
    """
    cls = family(name)
    given = {"eta": eta, "pred": pred, "init": init, "variance": variance}
    accepted = options(name)
    for key, value in given.items():
        if value is not None and key not in accepted and not (key == "pred" and value is False):
            raise ValueError(
                f"option {key}={value!r} does not apply to the {name} family; "
                f"{name} accepts: {', '.join(accepted + COMMON_OPTIONS)}")
    kwargs = {k: v for k, v in given.items() if k in accepted and v is not None}
    if guidance_scales is not None:
        layer_kwargs["guidance_scales"] = guidance_scales
    if "layer_name" in layer_kwargs:
        layer_kwargs["name"] = layer_kwargs.pop("layer_name")
    return cls(denoiser, num_steps=num_steps, stride=stride, time=time, remat=remat, loop=loop,
               **kwargs, **layer_kwargs)


def from_config(config, denoiser):
    """Rebuild a sampler from `layer.get_config()` (e.g. read back from JSON) and its denoiser."""
    if not isinstance(config, dict) or "family" not in config:
        raise ValueError("config must be a dict from Sampler.get_config() with a 'family' key")
    return family(config["family"]).from_config(config, denoiser)


def forward_copy(layer):
    """The same sampler with its variables' current values, without rematerialisation: for
    forward passes only (an export, a frozen start); later changes to `layer` do not reach it."""
    copy = from_config(dict(layer.get_config(), remat=False), layer.denoiser)
    copy.set_weights(layer.get_weights())
    return copy
