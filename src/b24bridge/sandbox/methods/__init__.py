"""The REST methods the sandbox implements; importing a module registers its methods."""

from __future__ import annotations

import importlib

MODULES = (
    "system",
    "crm",
    "crm_extra",
    "crm_statuses",
    "crm_categories",
    "crm_types",
    "crm_items",
    "crm_userfields",
    "crm_requisites",
    "crm_deal_contacts",
    "bizproc",
    "events",
)


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
