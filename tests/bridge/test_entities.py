"""What a route's record kind decides: ids, document ids, events and methods of deals, leads and smart-process
items."""

from __future__ import annotations

import pytest

from b24bridge.bridge.entities import (
    DEAL,
    ITEM_DOCUMENT_CLASS,
    LEAD,
    id_of,
    item_name,
    kind_of_event,
    legacy_name,
    record_id_of,
    smart_process,
)


@pytest.mark.parametrize(
    ("given", "found"),
    [
        ("DEAL_42", (DEAL, 42)),
        ("LEAD_7", (LEAD, 7)),
        (["crm", "CCrmDocumentLead", "LEAD_7"], (LEAD, 7)),
        ("42", (DEAL, 42)),  # a bare id is a deal's unless told otherwise
        ("LEAD_", None),
        ("LEAD_0", None),
        ("DEAL_1x", None),
        ("٣", None),  # a digit, but not an ASCII one
        ("1" * 13, None),
        (42, None),  # numbers come as text in every form Bitrix24 sends
        ([], None),
    ],
)
def test_record_ids_are_read_from_document_ids(given: object, found: object) -> None:
    assert record_id_of(given) == found


def test_an_id_of_another_kind_is_not_taken() -> None:
    assert id_of(LEAD, "7") == 7 and id_of(LEAD, "LEAD_7") == 7
    assert id_of(LEAD, "DEAL_7") is None and id_of(DEAL, "LEAD_7") is None


def test_each_kind_names_its_methods_events_and_documents() -> None:
    assert LEAD.method("productrows.set") == "crm.lead.productrows.set"
    assert LEAD.events == ("ONCRMLEADADD", "ONCRMLEADUPDATE") and kind_of_event("oncrmleadupdate") is LEAD
    assert kind_of_event("ONCRMDEALADD") is DEAL and kind_of_event("ONCRMCONTACTADD") is None
    assert LEAD.document_id(5) == ["crm", "CCrmDocumentLead", "LEAD_5"]
    assert DEAL.url("https://acme.bitrix24.com", 9) == "https://acme.bitrix24.com/crm/deal/details/9/"
    assert (DEAL.stage_field, LEAD.stage_field) == ("STAGE_ID", "STATUS_ID")


def test_a_smart_process_speaks_crm_item_in_camel_case_and_is_read_back_in_legacy_names() -> None:
    orders = smart_process(1038)
    method, params = orders.add({"TITLE": "Order", "STAGE_ID": "DT1038_5:NEW", "UF_CRM_5_X": "a", "PARENT_ID_2": 7})
    assert method == "crm.item.add"
    assert params == {
        "entityTypeId": 1038,
        "fields": {"title": "Order", "stageId": "DT1038_5:NEW", "UF_CRM_5_X": "a", "parentId2": 7},
        "useOriginalUfNames": "Y",
    }  # no REGISTER_SONET_EVENT: crm.item.* has no such parameter
    assert orders.get(9) == ("crm.item.get", {"entityTypeId": 1038, "id": 9, "useOriginalUfNames": "Y"})
    answer = {"item": {"id": 9, "stageId": "DT1038_5:NEW", "contactId": 3, "updatedTime": "2026-01-01T10:00:00+03:00",
                       "UF_CRM_5_X": "a", "parentId2": 7}}  # fmt: skip
    assert orders.record(answer) == {
        "ID": 9, "STAGE_ID": "DT1038_5:NEW", "CONTACT_ID": 3, "UPDATED_TIME": "2026-01-01T10:00:00+03:00",
        "DATE_MODIFY": "2026-01-01T10:00:00+03:00", "UF_CRM_5_X": "a", "PARENT_ID_2": 7,
    }  # fmt: skip
    assert orders.new_id(answer) == 9 and DEAL.new_id(9) == 9 and orders.new_id([]) == 0
    assert orders.ref("deal") == "$result[deal][item][id]" and DEAL.ref("deal") == "$result[deal]"
    assert orders.ref("deal", "CONTACT_ID") == "$result[deal][item][contactId]"
    assert orders.records({"items": [{"id": 4}]}) == [{"ID": 4}] and LEAD.records([{"ID": "4"}]) == [{"ID": "4"}]
    assert orders.origin("b24bridge", "m:DEAL:4") == {"XML_ID": "b24bridge:m:DEAL:4"}
    assert DEAL.origin("b24bridge", "m:DEAL:4") == {"ORIGINATOR_ID": "b24bridge", "ORIGIN_ID": "m:DEAL:4"}
    assert orders.find({"XML_ID": "x"})[1]["filter"] == {"xmlId": "x"}
    assert orders.stage_list(5) == "DYNAMIC_1038_STAGE_5" and DEAL.stage_list(3) == "DEAL_STAGE_3"
    assert orders.url("https://a.bitrix24.com", 9) == "https://a.bitrix24.com/crm/type/1038/details/9/"
    assert not orders.has_products and DEAL.has_products


def test_smart_process_items_are_known_by_their_events_and_document_ids() -> None:
    assert kind_of_event("ONCRMDYNAMICITEMUPDATE", "1038") == smart_process(1038)
    assert kind_of_event("ONCRMDYNAMICITEMADD", None) is None  # an item event must say its process
    assert kind_of_event("ONCRMDYNAMICITEMADD", "2") is None  # 2 is a deal, not a smart process
    assert record_id_of("DYNAMIC_1038_5") == (smart_process(1038), 5)
    assert record_id_of(["crm", ITEM_DOCUMENT_CLASS, "DYNAMIC_1038_5"]) == (smart_process(1038), 5)
    assert id_of(smart_process(1038), "DYNAMIC_1039_5") is None and id_of(smart_process(1038), "5") == 5
    # A process named by its title takes any process's items until it is resolved (the run then checks).
    assert id_of(smart_process(title="Orders"), "DYNAMIC_1039_5") == 5
    assert smart_process(1038).document_id(5) == ["crm", ITEM_DOCUMENT_CLASS, "DYNAMIC_1038_5"]


@pytest.mark.parametrize(
    ("legacy", "item"),
    [("STAGE_ID", "stageId"), ("ASSIGNED_BY_ID", "assignedById"), ("PARENT_ID_1220", "parentId1220"),
     ("IS_MANUAL_OPPORTUNITY", "isManualOpportunity"), ("XML_ID", "xmlId"), ("ID", "id"), ("BEGINDATE", "begindate")],
)  # fmt: skip
def test_legacy_and_item_field_names_convert_both_ways(legacy: str, item: str) -> None:
    assert item_name(legacy) == item and legacy_name(item) == legacy
