"""The robots b24bridge declares; each module holds one robot's declaration and input rules."""

from __future__ import annotations

from ..registry import Robot
from .create_contact import CREATE_CONTACT

ROBOTS: tuple[Robot, ...] = (CREATE_CONTACT,)


def declared() -> dict[str, Robot]:
    """The robots this version of b24bridge declares, by code."""
    return {robot.code: robot for robot in ROBOTS}
