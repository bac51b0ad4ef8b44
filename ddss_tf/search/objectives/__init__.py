"""Search objectives: what DDSS backpropagates through the chain, each in a module of its own,
and the registry `--objective` and `SearchConfig.objective` read.

    objectives.names()            # every objective's name: kid, ld3, kid_teacher, kid_cv, fid_cv
    objectives.get("ld3")         # its Objective: validation, defaults, label, cost, loss

Modules: `base` (the Objective and Loss interfaces), `kid` (DDSS's KID, per class on a guided
model), `ld3` (LD3's soft teacher), `kid_teacher` (KID plus the teacher distance), `kid_cv`
(KID with the start as a control variate), `fid_cv` (FID with the same control variate) and
`teacher_base` (what the teacher-matching objectives share; the pairs: search.teacher).
"""

from ddss_tf.search.objectives import fid_cv, kid, kid_cv, kid_teacher, ld3
from ddss_tf.search.objectives.base import FEW_STEPS, Loss, Objective

__all__ = ["names", "get", "find", "all_objectives", "default_name", "Objective", "Loss",
           "FEW_STEPS"]

# The registry: one line per objective, in --objective's order.
_REGISTRY = {o.name: o for o in (kid.KID(), ld3.LD3(), kid_teacher.KIDTeacher(),
                                  kid_cv.KIDControlVariate(), fid_cv.FIDControlVariate())}


def default_name(num_steps, guided=False, kernel="linear"):
    """The objective of a search that names none: KID plus the teacher term to K = FEW_STEPS;
    above, KID with the start as a control variate (kid_cv), or KID alone under
    classifier-free guidance or with another kernel than the linear one (which kid_cv
    refuses). At K <= 5 the teacher's distance steers the few-step chain towards the ODE's
    solution, which there is far better than any few-step sampler. Above, a start screened
    from the solvers is already better than that solution (UniPC at K = 10 beats the
    1000-step DDPM on the bundled model): the teacher pulls it back (at K = 10 no KID +
    teacher candidate beat its start in 200 steps), and KID's batch gradient is mostly noise
    there (its loss stayed flat over 100 steps and it kept its start), where kid_cv took FID
    on 10,000 samples from the start's 0.403 to 0.340 +- 0.010 over three training seeds
    (docs/ddss_search.md, "How the defaults were chosen")."""
    if num_steps <= FEW_STEPS and not guided:
        return "kid_teacher"
    return "kid_cv" if not guided and kernel == "linear" else "kid"


def names():
    """Every objective's name, in registry order."""
    return list(_REGISTRY)


def find(name):
    """The Objective called `name`, or None."""
    return _REGISTRY.get(name)


def get(name):
    """The Objective called `name`; ValueError listing the accepted names."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; accepted: {', '.join(names())}")
    return _REGISTRY[name]


def all_objectives():
    """Every registered Objective."""
    return list(_REGISTRY.values())
