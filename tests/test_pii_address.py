"""Street addresses in free text (guards/address.py): one of each convention found whole, and the look-alikes
that are no address (a town, a street without its number, numbers beside capitalised words)."""

from __future__ import annotations

import pytest

from pointsman.guards.address import find_addresses
from pointsman.guards.pii import PiiScanner


def found(text: str) -> list[str]:
    return [text[a:b] for a, b in find_addresses(text)]


@pytest.mark.parametrize("address", [
    "1600 Pennsylvania Avenue NW, Washington, DC 20500",
    "742 Evergreen Terrace, Springfield, OR 97403",
    "350 Fifth Ave Suite 3200, New York, NY 10118",
    "10 Downing Street, London SW1A 2AA",
    "Flat 2, 14 Mill Lane, Leeds LS1 4AB",
    "88 Queen St W, Toronto, ON M5H 2N2",
    "Hauptstraße 12, 10115 Berlin",
    "Karl-Marx-Allee 90a, 10243 Berlin",
    "12 rue de la Paix, 75002 Paris",
    "Calle Mayor 5, Madrid, 28013",
    "Via Roma 10, 00184, Roma (RM)",
    "Kerkstraat 3, 1017 GC, Amsterdam",
])
def test_each_convention_is_found_whole(address):
    assert found(f"Please ship it to {address} by Friday.") == [address]


@pytest.mark.parametrize("text", [
    "What is the weather in Berlin, Germany?",
    "I live on Baker Street.",
    "The meeting is in room 12 with Product Marketing.",
    "Compare the iPhone 15 Pro with the Galaxy S24.",
    "We sold 300 Main Course dishes via the app.",
    "Version 2 Release Notes, 2024",
])
def test_look_alikes_are_not_addresses(text):
    assert found(text) == []


def test_the_scanner_knows_the_kind_and_names_it_in_an_unknown_entity_error():
    scanner = PiiScanner(["ADDRESS", "EMAIL_ADDRESS"], 0.5)
    assert scanner.find("Mail a@example.org or visit 12 High Street, Oxford OX1 4AP") == [
        ("EMAIL_ADDRESS", "a@example.org"), ("ADDRESS", "12 High Street, Oxford OX1 4AP")]
    with pytest.raises(ValueError, match="ADDRESS"):
        PiiScanner(["POSTAL"], 0.5)


@pytest.mark.parametrize("text", [
    "12 Main Street, " + "A-" * 40 + "x",  # a town of many hyphenated words, no postcode: was exponential
    "12 Foo, " + "Ab-" * 40 + "!",
    "12 High Street, " + "Town " * 2000,
    "1 " * 20_000,  # digits everywhere: the whole text is one window
    "Calle " + "De " * 5000 + "5",
])
def test_adversarial_text_is_scanned_in_bounded_time(text):
    import time

    start = time.perf_counter()
    find_addresses(text)
    assert time.perf_counter() - start < 0.5
