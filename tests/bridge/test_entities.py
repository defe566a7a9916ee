"""What a route's record kind decides: ids, document ids, events and methods of deals and leads."""

from __future__ import annotations

import pytest

from b24bridge.bridge.entities import DEAL, LEAD, id_of, kind_of_event, record_id_of


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
