"""K-step diffusion samplers as Keras layers (docs/design.md: "Modules", "Public interfaces").

    layer = samplers.create("ddim", denoiser, num_steps=10, stride="quadratic", eta=0.0)
    x_T, noise = ddss_tf.noise.draw(seed, layer.num_steps, [B, H, W, C])
    x0 = layer(x_T, noise)          # noise [K, B, H, W, C]; optional when deterministic
    layer.query_times()             # descending float64 [K], model time units
    layer.coefficients()            # dict of float64 numpy arrays after the constraint maps
    samplers.names()                # families create() accepts
    samplers.learnable_names()      # the families a search learns; samplers.options(name):
                                    # a family's own options; samplers.label(name): its table name
    samplers.solver_names()         # the training-free multistep solvers (GGDM's solver inits)
    samplers.from_config(layer.get_config(), denoiser)   # the denoiser is not config
    samplers.forward_copy(layer)    # the same sampler and values, not rematerialised

Training-free: "ddpm", "ddim", and the multistep ODE solvers "dpm_solver_pp_2m",
"dpm_solver_pp_3m", "unipc", "unipc_3", "ipndm". Learnable (DDSS,
Watson et al. 2022): "ddim_sigma", "vars", "rddim", "ggdm" (pred=True: +PRED); any
family with time=True learns its query times (+TIME). Learnable layers hold only
their own float32 variables (`layer.trainable_variables`); the network stays frozen
and untracked.
"""

from ddss_tf.samplers.base import Sampler
from ddss_tf.samplers.registry import (create, default_stride, family, forward_copy,
                                       from_config, inits, label, learnable_names, loopable,
                                       names, options, solver_names)
from ddss_tf.samplers.times import stride_names

__all__ = ["Sampler", "create", "default_stride", "family", "forward_copy", "from_config",
           "inits", "label",
           "learnable_names", "loopable", "names", "options", "solver_names", "stride_names"]
