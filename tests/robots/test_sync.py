"""Robot registration: install registers the declared set; sync updates changed robots and deletes removed ones."""

from __future__ import annotations

import dataclasses

from b24bridge.robots.definitions.create_contact import CODE, CREATE_CONTACT
from b24bridge.sandbox.bizproc_defs import key_of
from tests.portals.conftest import rows
from tests.robots.conftest import RobotBridge, robot_codes


async def test_install_registers_and_sync_updates_adds_and_deletes(bridge: RobotBridge) -> None:
    sandbox = bridge.sandbox
    bridge.install_and_sync()
    assert robot_codes(sandbox, bridge.client_id) == [CODE]
    registered = sandbox.portal.world.robots[key_of(bridge.client_id, CODE)]
    assert registered["HANDLER"] == f"{bridge.base_url}/robots/{CODE}"
    assert registered["USE_SUBSCRIPTION"] == "Y"
    [portal] = rows(bridge.database_url, "SELECT member_id FROM portals")
    member_id = portal["member_id"]
    public_url = bridge.base_url
    bridge.stop()

    async with bridge.services(public_url=public_url) as services:
        sync = services.robot_sync
        # Nothing changed: nothing is sent but the list.
        report = await sync.sync_portal(member_id)
        assert (report.added, report.updated, report.deleted, report.unchanged) == ([], [], [], [CODE])

        changed = dataclasses.replace(CREATE_CONTACT, name_en="Create a CRM contact")
        extra = dataclasses.replace(CREATE_CONTACT, code="b24bridge_extra")
        report = await sync.sync_portal(member_id, {CODE: changed, "b24bridge_extra": extra})
        assert report.updated == [CODE] and report.added == ["b24bridge_extra"]
        record = sandbox.portal.world.robots[key_of(bridge.client_id, CODE)]
        # The portal upper-cases map keys it stores (REFERENCE 5.2), so look the language up either way.
        assert {str(k).lower(): v for k, v in record["NAME"].items()}["en"] == "Create a CRM contact"
        assert sorted(robot_codes(sandbox, bridge.client_id)) == ["b24bridge_create_contact", "b24bridge_extra"]

        # Idempotent: the same declaration again changes nothing.
        report = await sync.sync_portal(member_id, {CODE: changed, "b24bridge_extra": extra})
        assert (
            report.updated == []
            and report.added == []
            and sorted(report.unchanged) == sorted([CODE, "b24bridge_extra"])
        )

        # The extra robot is no longer declared: deleted from the portal and forgotten.
        report = await sync.sync_portal(member_id, {CODE: changed})
        assert report.deleted == ["b24bridge_extra"]
        assert robot_codes(sandbox, bridge.client_id) == [CODE]
        stored = rows(bridge.database_url, "SELECT code FROM robot_registrations WHERE member_id = %s", member_id)
        assert stored == [{"code": CODE}]

        # Back to the declared set: the changed robot is updated back; states say it is current.
        report = await sync.sync_portal(member_id)
        assert report.updated == [CODE]
        states = await sync.states(member_id)
        assert [(s.code, s.declared, s.registered, s.current) for s in states] == [(CODE, True, True, True)]

        # A robot lost on the portal's side (an app update removes them) is added again.
        del sandbox.portal.world.robots[key_of(bridge.client_id, CODE)]
        report = await sync.sync_portal(member_id)
        assert report.added == [CODE]
