"""Helpers the sans-IO wire tests share (no trio): they work on the interpreted layer
and on the compiled one (``chanserv_trio.wire.COMPILED``) alike."""

from __future__ import annotations

from chanserv_trio.wire._windows import Windows


def windows_fields(windows: Windows) -> dict[str, int]:
    """Every attribute of ``windows``, by name (interpreted, the class's ``__slots__``;
    compiled by mypyc, which has none, its attribute list)."""
    cls = type(windows)
    slots: tuple[str, ...] = getattr(cls, "__slots__", ())
    names: tuple[str, ...] = slots or getattr(cls, "__mypyc_attrs__", ())
    assert names, "Windows lists no attributes"
    return {name: getattr(windows, name) for name in names}


def copy_windows(windows: Windows) -> Windows:
    """A copy of ``windows`` (a compiled class cannot be copied by :mod:`copy`)."""
    twin = Windows(send=0, receive=0)
    for name, value in windows_fields(windows).items():
        setattr(twin, name, value)
    return twin
