"""One-off check of ddss_tf's multistep solvers against diffusers' schedulers, in float64.

Not part of CI (nothing in the package or its tests needs torch or diffusers). Run it in a
separate virtualenv that has torch, diffusers and TensorFlow (this machine has a CPU wheel of
torch 2.13.0 on local disk; another torch version downloads gigabytes of CUDA):

    python -m venv /work/venv_diffusers
    /work/venv_diffusers/bin/pip install torch==2.13.0 diffusers numpy tensorflow-cpu==2.21.0 keras absl-py
    PYTHONPATH=/path/to/ddss_tf /work/venv_diffusers/bin/python tools/compare_diffusers.py

Both sides sample Gaussian data N(0.3, 0.5^2) with its exact eps, from the same x_T, on the
same K query times of a linear-beta (T = 1000) schedule, and the script prints the largest
absolute difference between their outputs (x0 at the end of the chain):

  ddss_tf    the layer built in float64 (dtype="float64": coefficients, chain and denoiser);
  diffusers  DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint")
             or UniPCMultistepScheduler(solver_type="bh2", predict_x0=True), solver_order 2 or
             3, final_sigmas_type="zero", driven by its own step(); its noise levels
             (`scheduler.sigmas`, sigma / alpha) are replaced after set_timesteps by the
             float64 values at ddss_tf's query times followed by 0 (set_timesteps builds them
             in float32 from integer timesteps; the scheduler computes alpha, sigma and lambda
             from these alone), and its timesteps by K distinct labels.
  k-diffusion  iPNDM: a numpy transcription of sample_ipndm (ComfyUI's k_diffusion/sampling.py,
             after zju-pi/diff-sampler), on Karras sigmas from its own get_sigmas_karras formula.

Conventions. ddss_tf's K evaluations end with the x0_hat of the last one (a first-order step to
sigma = 0); so do diffusers' with final_sigmas_type="zero" and k-diffusion's when its last sigma
is 0. What differs is the order of the step into the last query time: ddss_tf keeps the full
order there, while diffusers' lower_order_final=True (its default) lowers it, for DPM-Solver
below 15 steps and for UniPC always (order min(p, K - i)). With lower_order_final=False
DPM-Solver matches; UniPC then runs its final step to sigma = 0 at full order, which divides by
lambda = inf (NaN), so the script resets the scheduler's warm-up counter before the final step
(`lower_order_nums = 0`: order 1 there, as ddss_tf). Both defaults are reported as well.
DPMSolverMultistepScheduler.step casts the sample to float32 ("upcast"); the float64 runs pass a
tensor whose .to(torch.float32) keeps float64, and one row shows the plain float32-cast step.
"""

import sys

import numpy as np
import tensorflow as tf
import torch
import diffusers

from ddss_tf import denoisers
from ddss_tf import samplers
from ddss_tf import schedules

M, S = 0.3, 0.5                     # the data: N(M, S^2) per pixel
KS = (3, 4, 5, 10, 20)
SHAPE = (16, 1, 2, 2)               # torch NCHW; ddss_tf gets the same values as NHWC


def _x0_hat(x, alpha, sigma):
    """E[x_0 | x_t] of N(M, S^2) data."""
    return M + alpha * S * S * (x - alpha * M) / (alpha * alpha * S * S + sigma * sigma)


def _denoiser(schedule):
    def eps_fn(x_t, t):
        alpha = denoisers.append_dims(schedule.alpha(t), x_t)
        sigma = denoisers.append_dims(schedule.sigma(t), x_t)
        return sigma * (x_t - alpha * M) / (alpha * alpha * S * S + sigma * sigma)
    return denoisers.from_eps_fn(eps_fn, schedule)


class _KeepFloat64(torch.Tensor):
    """A sample whose .to(torch.float32) stays float64 (DPMSolverMultistepScheduler.step's upcast)."""

    def to(self, *args, **kwargs):
        if torch.float32 in args or kwargs.get("dtype") is torch.float32:
            return self
        return super().to(*args, **kwargs)


def ddss_tf_sample(schedule, name, stride, k, x_T):
    layer = samplers.create(name, _denoiser(schedule), num_steps=k, stride=stride, remat=False,
                            dtype="float64")
    x0 = layer(tf.constant(np.transpose(x_T, (0, 2, 3, 1)))).numpy()
    return np.transpose(x0, (0, 3, 1, 2)), layer.query_times()


def diffusers_sample(schedule, kind, order, query_times, x_T, lower_order_final, keep_float64):
    cls = (diffusers.DPMSolverMultistepScheduler if kind == "dpm"
           else diffusers.UniPCMultistepScheduler)
    options = (dict(algorithm_type="dpmsolver++", solver_type="midpoint") if kind == "dpm"
               else dict(solver_type="bh2", predict_x0=True))
    scheduler = cls(num_train_timesteps=schedule.num_timesteps, beta_start=1e-4, beta_end=0.02,
                    beta_schedule="linear", solver_order=order, prediction_type="epsilon",
                    lower_order_final=lower_order_final, final_sigmas_type="zero", **options)
    k = len(query_times)
    scheduler.set_timesteps(k)
    sigma_ve = np.exp(-0.5 * schedule.log_snr(query_times))
    scheduler.sigmas = torch.from_numpy(np.append(sigma_ve, 0.0))
    scheduler.timesteps = torch.arange(k - 1, -1, -1)
    x = torch.from_numpy(x_T.copy())
    for i, t in enumerate(scheduler.timesteps):
        alpha = 1.0 / np.sqrt(sigma_ve[i] ** 2 + 1.0)
        sigma = sigma_ve[i] * alpha
        eps = sigma * (x - alpha * M) / (alpha * alpha * S * S + sigma * sigma)
        if kind == "unipc" and not lower_order_final and i == k - 1:
            scheduler.lower_order_nums = 0      # first order on the step to sigma = 0
        sample = x.as_subclass(_KeepFloat64) if keep_float64 else x
        x = scheduler.step(eps, t, sample).prev_sample.as_subclass(torch.Tensor)
    return x.numpy()


def karras_sigmas(n, sigma_min, sigma_max, rho=7.0):
    """k-diffusion's get_sigmas_karras, transcribed: n sigmas from sigma_max to sigma_min, then 0."""
    ramp = np.linspace(0.0, 1.0, n)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return np.append((inv_max + ramp * (inv_min - inv_max)) ** rho, 0.0)


def kdiffusion_ipndm(x_T, sigmas, max_order=4):
    """sample_ipndm, transcribed (numpy): x in variance-exploding scale, model -> x0_hat."""
    x_next, buffer = x_T * np.sqrt(1.0 + sigmas[0] ** 2), []   # x_ve = x_vp / alpha
    for i in range(len(sigmas) - 1):
        t_cur, t_next, x_cur = sigmas[i], sigmas[i + 1], x_next
        alpha = 1.0 / np.sqrt(1.0 + t_cur ** 2)
        denoised = _x0_hat(alpha * x_cur, alpha, t_cur * alpha)
        d_cur, order = (x_cur - denoised) / t_cur, min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x_cur + (t_next - t_cur) * d_cur
        elif order == 2:
            x_next = x_cur + (t_next - t_cur) * (3 * d_cur - buffer[-1]) / 2
        elif order == 3:
            x_next = x_cur + (t_next - t_cur) * (23 * d_cur - 16 * buffer[-1] + 5 * buffer[-2]) / 12
        else:
            x_next = x_cur + (t_next - t_cur) * (
                55 * d_cur - 59 * buffer[-1] + 37 * buffer[-2] - 9 * buffer[-3]) / 24
        buffer = (buffer + [d_cur])[-(max_order - 1):]
    return x_next


ROWS = [  # (label, ddss_tf family, diffusers kind, order, lower_order_final, keep float64)
    ("dpm_solver_pp_3m | DPMSolverMultistep(3), lower_order_final=False", "dpm_solver_pp_3m",
     "dpm", 3, False, True),
    ("dpm_solver_pp_3m | DPMSolverMultistep(3), lower_order_final=True (default)",
     "dpm_solver_pp_3m", "dpm", 3, True, True),
    ("dpm_solver_pp_3m | DPMSolverMultistep(3), lower_order_final=False, float32 step",
     "dpm_solver_pp_3m", "dpm", 3, False, False),
    ("unipc_3 | UniPCMultistep(3), lower_order_final=False, order 1 at the end",
     "unipc_3", "unipc", 3, False, True),
    ("unipc_3 | UniPCMultistep(3), lower_order_final=True (default)", "unipc_3", "unipc", 3,
     True, True),
    ("dpm_solver_pp_2m | DPMSolverMultistep(2)", "dpm_solver_pp_2m", "dpm", 2, True, True),
    ("unipc | UniPCMultistep(2)", "unipc", "unipc", 2, True, True),
]
MATCHED = (0, 3, 5, 6)  # the rows whose conventions are ddss_tf's: float64 rounding expected
WIDTH = 80


def _row(label, values):
    print(f"  {label:{WIDTH}s} " + "  ".join(f"{v:8.1e}" for v in values))


def main():
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"tensorflow {tf.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    schedule = schedules.linear_beta(1000)
    x_T = np.random.default_rng(0).standard_normal(SHAPE)
    print("max |x0(ddss_tf) - x0(reference)| over 64 values, at K = " + ", ".join(map(str, KS)))
    worst = 0.0
    for stride in ("logsnr_uniform", "quadratic", "trailing"):
        print(f"grid {stride}")
        for row, (label, name, kind, order, lower_final, keep) in enumerate(ROWS):
            diffs = []
            for k in KS:
                ours, t = ddss_tf_sample(schedule, name, stride, k, x_T)
                theirs = diffusers_sample(schedule, kind, order, t, x_T, lower_final, keep)
                diffs.append(np.max(np.abs(ours - theirs)))
            _row(label, diffs)
            worst = max([worst] + diffs) if row in MATCHED else worst
    for stride in ("edm", "logsnr_uniform"):
        print(f"grid {stride}")
        diffs, grid = [], []
        for k in KS:
            ours, t = ddss_tf_sample(schedule, "ipndm", stride, k, x_T)
            sigma_ve = np.exp(-0.5 * schedule.log_snr(t))
            sigmas = (karras_sigmas(k, sigma_ve[-1], sigma_ve[0]) if stride == "edm"
                      else np.append(sigma_ve, 0.0))
            grid.append(np.max(np.abs(sigmas[:-1] / sigma_ve - 1.0)))
            diffs.append(np.max(np.abs(ours - kdiffusion_ipndm(x_T, sigmas))))
        _row("ipndm | k-diffusion sample_ipndm (transcribed)", diffs)
        worst = max([worst] + diffs)
        if stride == "edm":
            _row("edm grid | get_sigmas_karras: max relative difference of sigma/alpha", grid)
    print(f"largest difference where the conventions are the same: {worst:.1e}")


if __name__ == "__main__":
    main()
