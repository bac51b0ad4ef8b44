"""Search objectives: what DDSS backpropagates through the chain, each in a module of its own,
and the registry `--objective` and `SearchConfig.objective` read.

    objectives.names()            # every objective's name: kid, ld3, kid_teacher
    objectives.get("ld3")         # its Objective: validation, defaults, label, cost, loss

Modules: `base` (the Objective and Loss interfaces), `kid` (DDSS's KID, per class on a guided
model), `ld3` (LD3's soft teacher), `kid_teacher` (KID plus the teacher distance) and
`teacher_base` (what the teacher-matching objectives share; the pairs: search.teacher).
"""

from ddss_tf.search.objectives import kid, kid_teacher, ld3
from ddss_tf.search.objectives.base import FEW_STEPS, Loss, Objective

__all__ = ["names", "get", "find", "all_objectives", "default_name", "Objective", "Loss",
           "FEW_STEPS"]

# The registry: one line per objective, in --objective's order.
_REGISTRY = {o.name: o for o in (kid.KID(), ld3.LD3(), kid_teacher.KIDTeacher())}


def default_name(guided=False):
    """The objective of a search that names none: KID plus the teacher term (the best at every
    K measured: docs/ddss_search.md); KID alone for a search under classifier-free guidance
    (the one a guided search takes)."""
    return "kid" if guided else "kid_teacher"


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
