"""Settings whose fields carry their own help: one spelling of each setting.

A settings dataclass (`models.ModelSpec`, `data.DataSpec`, `search.SearchConfig`) declares
every field with `setting(default, help, ...)`: its type, default, what it means, and the
values a flag accepts. The library reads the dataclass; the binaries' flags are generated
from it (`cli.define_flags`, `cli.flag_settings`), so a new setting is one edit and a flag's
help cannot drift from the field it sets.

    @dataclasses.dataclass
    class DataSpec:
        dataset: str = settings.setting("digits", "Real data the model was trained on ...")

    settings.describe(DataSpec)   # [Setting(name, type, default, help, choices, lower, upper)]
"""

import collections
import dataclasses
import typing

__all__ = ["setting", "Setting", "describe", "defaults"]

Setting = collections.namedtuple("Setting", ["name", "type", "optional", "default", "help",
                                             "choices", "lower", "upper"])
Setting.__doc__ = """One field of a settings dataclass: its name, its base type (bool, int,
float, str or list), whether None is allowed (a default resolved later), its default, help,
accepted values (a tuple, or None for any) and numeric bounds (None: unbounded)."""


def setting(default=dataclasses.MISSING, help="", *, choices=None, lower=None, upper=None,
            default_factory=dataclasses.MISSING):
    """A dataclasses.field carrying a flag's help, the accepted values (`choices`: a tuple or a
    function returning one, called when flags are defined, so registries may be read lazily)
    and bounds."""
    if not help:
        raise ValueError("a setting needs its help text")
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata=dict(help=help, choices=choices, lower=lower, upper=upper))


def _base_type(hint):
    """(base type, optional) of a field's type hint: Optional[X] is (X, True); List[str] is
    (list, False); a Union of several types is (None, optional) (not a flag of one type)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        if len(args) != 1:
            return None, optional
        hint, origin = args[0], typing.get_origin(args[0])
    if origin in (list, tuple):
        return list, optional
    return (hint if hint in (bool, int, float, str) else None), optional


def describe(cls, names=None):
    """[Setting] of the dataclass `cls` (its fields declared with `setting`), in field order
    or in the order of `names`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}
    out = []
    for name in (names or list(fields)):
        if name not in fields:
            raise KeyError(f"{cls.__name__} has no setting {name!r}")
        f = fields[name]
        base, optional = _base_type(hints[name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        choices = f.metadata["choices"]
        choices = tuple(choices()) if callable(choices) else choices
        out.append(Setting(name, base, optional or default is None, default, f.metadata["help"],
                           choices, f.metadata["lower"], f.metadata["upper"]))
    return out


def defaults(cls):
    """{name: default} of every setting of `cls`."""
    return {s.name: s.default for s in describe(cls)}
