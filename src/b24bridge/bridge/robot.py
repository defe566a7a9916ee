"""The bridge robot: placed on a deal stage in a source portal, it hands the deal to its route's target and gives
the workflow the target deal's ID and URL (or the error). Registered with the other robots; its calls come to the
bridge's own handler (``/bridge/robot``), not the robot runtime."""

from __future__ import annotations

from b24bridge.robots.registry import DEAL, LEAD, SMART_PROCESS, Property, Robot

from .schemas import ROBOT_CODE

BRIDGE_ROBOT = Robot(
    code=ROBOT_CODE,
    name_en="Hand the deal over (b24bridge)",
    name_ru="Передать сделку (b24bridge)",
    description_en="Creates or updates this deal in the route's target portal and returns its ID and URL.",
    description_ru="Создаёт или обновляет сделку в портале-получателе маршрута и возвращает её ID и ссылку.",
    properties={
        "route": Property("Route", "Маршрут", required=True, description="The route's name in b24bridge's routes file"),
    },
    return_properties={
        "target_deal_id": Property("Target deal ID", "ID сделки у получателя", type="int"),
        "target_deal_url": Property("Target deal URL", "Ссылка на сделку у получателя"),
    },
    document_types=(DEAL, LEAD, SMART_PROCESS),
    handler_path="/bridge/robot",
)
