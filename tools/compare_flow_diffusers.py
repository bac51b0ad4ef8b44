"""One-off check of ddss_tf's samplers on rectified-flow models against diffusers, in float64.

Not part of CI (nothing in the package or its tests needs torch or diffusers). Run it in the
virtualenv of tools/compare_diffusers.py (torch, diffusers, TensorFlow):

    PYTHONPATH=/path/to/ddss_tf /work/venv_diffusers/bin/python tools/compare_flow_diffusers.py

Both sides sample Gaussian data N(0.3, 0.5^2) with its exact velocity v = E[eps - x0 | x] on a
rectified flow x = (1 - s) x0 + s eps (T = 1000, SD3's shift 3 and plain shift 1), from the
same N(0, I) draw, and the script prints the largest absolute difference of their outputs:

  ddss_tf    the layer in float64 (dtype="float64") on schedules.rectified_flow(1000, shift,
             time_scale=1000) with a "flow" denoiser over the exact velocity network:
             DDIM (eta = 0, Euler) on the flow_euler grid; DPM-Solver++(2M) and UniPC on
             flow_sigmas;
  diffusers  FlowMatchEulerDiscreteScheduler(shift), DPMSolverMultistepScheduler(
             use_flow_sigmas=True, flow_shift, prediction_type="flow_prediction",
             algorithm_type="dpmsolver++", solver_order=2) and UniPCMultistepScheduler(
             use_flow_sigmas=True, flow_shift, prediction_type="flow_prediction",
             solver_type="bh2", solver_order=2), driven by their own step() from the draw as
             the flow state at their first sigma.

Two rows per scheduler: "same sigmas", where its sigmas are replaced after set_timesteps by
ddss_tf's noise levels in float64 (then 0) and its sample starts as ddss_tf's (the
variance-preserving x_T scaled by c = sqrt((1 - s)^2 + s^2)): the same computation, float64
rounding expected; and "own grid", the scheduler as a user runs it (set_timesteps(K), its
float32 sigmas, the draw as its flow state): what differs is the grid's first point.
FlowMatchEuler's first sigma is 1 (pure noise), which ddss_tf's schedule does not reach (its
noisiest time is u = T / (T + 1): schedules.RectifiedFlow); UniPC's flow grid is DPM-Solver's
moved up by 1 / T, its first sigma 1 - 1e-6. Timesteps are replaced by K distinct labels (the
scheduler rounds s * 1000 to integers, which repeat at large K). The step functions cast the
sample to float32 ("upcast"); the float64 runs pass a tensor whose .to(torch.float32) keeps
float64, as tools/compare_diffusers.py does.
"""

import sys

import numpy as np
import tensorflow as tf
import torch
import diffusers

from ddss_tf import denoisers, samplers, schedules

from compare_diffusers import _KeepFloat64  # tools/, beside this script

M, S = 0.3, 0.5                     # the data: N(M, S^2) per pixel
T = 1000
KS = (3, 5, 10, 20)
SHAPE = (16, 1, 2, 2)               # torch NCHW; ddss_tf gets the same values as NHWC


def _velocity(x, s):
    """E[eps - x0 | x] of N(M, S^2) data at noise level s (numpy, torch or tf)."""
    var = (1 - s) ** 2 * S * S + s * s
    centred = x - (1 - s) * M
    return s * centred / var - (M + (1 - s) * S * S * centred / var)


def _denoiser(schedule):
    def fn(x, t_net):
        return _velocity(x, denoisers.append_dims(t_net / schedule.time_scale, x))
    return denoisers.from_fn(fn, schedule, prediction="flow")


def ddss_tf_sample(schedule, name, stride, k, x_T):
    layer = samplers.create(name, _denoiser(schedule), num_steps=k, stride=stride, remat=False,
                            dtype="float64")
    x0 = layer(tf.constant(np.transpose(x_T, (0, 2, 3, 1)))).numpy()
    return np.transpose(x0, (0, 3, 1, 2)), schedule.flow_sigma(layer.query_times())


def _scheduler(kind, shift):
    if kind == "euler":
        return diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift=shift)
    flow = dict(num_train_timesteps=T, use_flow_sigmas=True, flow_shift=shift,
                prediction_type="flow_prediction", solver_order=2, final_sigmas_type="zero")
    if kind == "dpm":
        return diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++",
                                                     solver_type="midpoint", **flow)
    return diffusers.UniPCMultistepScheduler(solver_type="bh2", predict_x0=True, **flow)


def diffusers_sample(kind, shift, k, x_T, sigmas=None):
    """The scheduler's chain from x_T: on `sigmas` (float64, ddss_tf's; x_T scaled to the flow
    state there) or, with None, on its own set_timesteps(k) grid from x_T as its flow state."""
    scheduler = _scheduler(kind, shift)
    scheduler.set_timesteps(k)
    x = torch.from_numpy(x_T.copy())
    if sigmas is not None:
        scheduler.sigmas = torch.from_numpy(np.append(sigmas, 0.0))
        x = x * float(np.sqrt((1 - sigmas[0]) ** 2 + sigmas[0] ** 2))
    scheduler.timesteps = torch.arange(k - 1, -1, -1, dtype=torch.float64)
    own = scheduler.sigmas.numpy().astype(np.float64)
    for i, t in enumerate(scheduler.timesteps):
        v = _velocity(x, float(own[i]))
        x = scheduler.step(v, t, x.as_subclass(_KeepFloat64)).prev_sample.as_subclass(torch.Tensor)
    return x.numpy(), own[:-1]


ROWS = [  # (label, ddss_tf family, its grid, diffusers kind)
    ("ddim (Euler), flow_euler | FlowMatchEulerDiscreteScheduler", "ddim", "flow_euler",
     "euler"),
    ("dpm_solver_pp_2m, flow_sigmas | DPMSolverMultistepScheduler(2), use_flow_sigmas",
     "dpm_solver_pp_2m", "flow_sigmas", "dpm"),
    ("unipc, flow_sigmas | UniPCMultistepScheduler(2, bh2), use_flow_sigmas", "unipc",
     "flow_sigmas", "unipc"),
]
WIDTH = 84


def _row(label, values):
    print(f"  {label:{WIDTH}s} " + "  ".join(f"{v:8.1e}" for v in values))


def main():
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"tensorflow {tf.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    x_T = np.random.default_rng(0).standard_normal(SHAPE)
    print("max |x0(ddss_tf) - x0(diffusers)| over 64 values, at K = " + ", ".join(map(str, KS)))
    worst = 0.0
    for shift in (3.0, 1.0):
        schedule = schedules.rectified_flow(T, shift, time_scale=1000.0)
        print(f"shift {shift:g}")
        for label, name, stride, kind in ROWS:
            same, own, first = [], [], []
            for k in KS:
                ours, sigmas = ddss_tf_sample(schedule, name, stride, k, x_T)
                same.append(np.max(np.abs(ours - diffusers_sample(kind, shift, k, x_T, sigmas)[0])))
                theirs, their_sigmas = diffusers_sample(kind, shift, k, x_T)
                own.append(np.max(np.abs(ours - theirs)))
                first.append(np.max(np.abs(their_sigmas - sigmas)))
            _row(label + ", same sigmas", same)
            _row(label + ", own grid", own)
            _row("    own grid: max |sigma(diffusers) - sigma(ddss_tf)|", first)
            worst = max([worst] + same)
    print(f"largest difference on the same sigmas: {worst:.1e}")


if __name__ == "__main__":
    main()
