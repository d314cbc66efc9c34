"""Bounding methods: what each computes, and their names as users type them: ours, and auto_LiRPA's
(`CROWN`, `IBP`, `backward`, ...). Every entry point that takes a method (BoundedModel, compute_bounds,
certified_map, the CLI) resolves it with `method_name`."""

from __future__ import annotations

from opwise.errors import InputError, did_you_mean

#: method -> (policy for intermediate bounds, method for the final bound)
METHODS = {
    "ibp": ("ibp", "ibp"),
    "crown-ibp": ("ibp", "crown"),
    "crown": ("crown", "crown"),
    "forward-crown": ("forward", "crown"),
    "alpha-crown": ("crown", "alpha-crown"),
}

# auto_LiRPA's names (lower-cased) for what our methods compute. Its pure "forward" mode has no twin here:
# it maps to forward-crown, whose final bound (backward from forward-mode intermediate bounds) is at least
# as tight and equally sound.
METHOD_ALIASES = {
    "backward": "crown",
    "crown-optimized": "alpha-crown",
    "optimized-crown": "alpha-crown",
    "ibp+backward": "crown-ibp",
    "forward": "forward-crown",
    "forward+backward": "forward-crown",
}


def method_name(name: str, extra: tuple[str, ...] = ()) -> str:
    """Our name for a bounding method given in any case, with `_` for `-`, or by auto_LiRPA's name;
    `extra` adds names the caller accepts too (e.g. "auto").

    >>> method_name("CROWN"), method_name("backward"), method_name("alpha_CROWN"), method_name("IBP+backward")
    ('crown', 'crown', 'alpha-crown', 'crown-ibp')
    >>> method_name("crwn")
    Traceback (most recent call last):
    ...
    opwise.errors.InputError: unknown method 'crwn' (did you mean 'crown'?); choose one of ibp, crown-ibp, ...
    """
    normal = str(name).strip().lower().replace("_", "-").replace(" ", "")
    normal = METHOD_ALIASES.get(normal, normal)
    choices = (*extra, *METHODS)
    if normal in choices:
        return normal
    raise InputError(f"unknown method {name!r}{did_you_mean(normal, choices)}; choose one of {', '.join(choices)} "
                     f"(or auto_LiRPA's names: {', '.join(METHOD_ALIASES)})")
