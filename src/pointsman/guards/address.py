"""Street addresses in free text, by pattern: a house number beside a street word (Main Street 12, 12 Main St,
Hauptstraße 12, 12 rue de la Paix, Calle Mayor 5, Via Roma 1, Kerkstraat 3), with what follows it when it looks
like the rest of an address (unit, postcode, town, state). No model and no list of places: a town or country
alone is not an address and is never matched, nor is a street named without its number.

Written from the postal conventions of the US, Canada, the UK, Germany, Austria, Switzerland, France, Spain,
Italy and the Netherlands (bench/guards/PII_NAMES.md measures it). English street words are the common ones,
not the whole USPS list: a rarer one (12 Regina Mountains) is found only when a town and postcode follow.
"""

from __future__ import annotations

import re

__all__ = ["ADDRESS_PATTERNS", "find_addresses"]

_UP = r"[A-ZÀ-ÖØ-Þ]"
_WORD = rf"{_UP}[\w'’.\-]*"  # a capitalised word
_EN_STREET = (r"Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Square|Sq|Terrace|"
              r"Terr|Way|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Crescent|Cres|Close|Grove|Gardens|Gdns|Mews|Row|Walk|"
              r"Trail|Trl|Plaza|Alley|Expressway|Freeway|Loop|Pike|Turnpike|Hill|Green|Rise|Vale|View|Park")
_EN_UNIT = r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|Room|Rm|#)\.?\s*#?\s*\w{1,6})?"
# 12 Main Street, 1600 Pennsylvania Avenue NW, 221B Baker St., Flat 3, 12 Green Lane
_EN = (rf"(?:\b(?:Flat|Studio|Apartment|Unit)\s+\w{{1,5}},\s*)?\b\d{{1,6}}[A-Za-z]?\s+(?:{_WORD}\s+){{1,3}}"
       rf"(?:{_EN_STREET})\b\.?(?:\s+[NS][EW]?\b|\s+[EW]\b)?{_EN_UNIT}")
# Hauptstraße 12, Vogtallee 22-15, Oda-Preiß-Straße 1, Reinhardtstr. 4, Kerkstraat 3, Lizeweg 686
_DE_NL_SUFFIX = (r"straße|strasse|str\.|weg|gasse|allee|platz|ring|damm|ufer|chaussee|steig|pfad|markt|"
                 r"straat|laan|baan|boulevard|plein|gracht|kade|singel|dijk|dreef|hof|park|pad|steeg|kwartier")
_DE_NL = rf"\b{_UP}[\w\-]*?(?i:{_DE_NL_SUFFIX})(?:\s+{_WORD})?\s+\d{{1,4}}(?:\s?[a-zA-Z]\b|-\d{{1,4}}|/\d{{1,4}})?"
_DE_NL_SPLIT = rf"\b(?:Am|An der|Auf dem|Im|In der|Zum|Zur)\s+{_WORD}\s+\d{{1,4}}[a-z]?\b"
# 12 rue de la Paix, 98, avenue Lucie Fernandes, 2 bis boulevard Dupont
_FR = (rf"\b\d{{1,4}}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|route|cours|"
       rf"passage|square|voie|rond-point)\s+(?:(?:de la|de l'|du|des|de|d'|la|le|les)\s*)?{_WORD}(?:[ \-]{_WORD}){{0,3}}")
# Calle Mayor 5, Avenida de la Constitución, 12, Vicolo Sgalambro, 59, Via Roma 1
_ES_IT_STREET = (r"Calle|C/|Avenida|Avda\.|Paseo|Plaza|Camino|Carrer|Ronda|Travesía|Travesia|Glorieta|Callejón|Cuesta|"
                 r"Pasaje|Alameda|Vial|Urbanización|Rambla|Via|Viale|Piazza|Piazzale|Corso|Largo|Vicolo|Contrada|"
                 r"Borgo|Strada|Rotonda|Incrocio|Stretto|Canale|Lungomare|Salita")
_ES_IT = (rf"\b(?:{_ES_IT_STREET})\s+(?:(?:de la|de los|de las|del|de|dei|degli|della|delle|del|di)\s+)?"
          rf"{_WORD}(?:\s+(?:de\s+)?{_WORD}){{0,3}},?\s+(?:n\.?\s?|nº\s?)?\d{{1,4}}[a-zA-Z]?\b"
          rf"(?:\s+(?:Apt|Puerta|Piso|Appartamento|Piano|Interno|Scala)\.?\s*\w{{1,4}})?")
# what may follow a street: ", Springfield, IL 62704", ", 10115 Berlin", ", SW1A 1AA", ", 30010, Campagna Lupia (VE)"
_ZIP = (r"\d{5}(?:-\d{4})?|\d{4}\s?[A-Z]{2}\b|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b|[A-Z]\d[A-Z]\s?\d[A-Z]\d\b|"
        r"\d{4,5}")
# one separator between two words and none inside one: a town of many words has one reading, so a failed match
# backtracks in linear time, not exponential
_TOWN = rf"{_UP}[\w'’]*(?:[ \-](?:{_UP}[\w'’]*|(?:sur|sous|en|de|di|am|an der|la|le|les|del)\b))*(?:\s\([A-Z]{{2}}\))?"
_STATE = r"(?:[A-Z]{2})"
_TAIL = (rf"(?:\s*,?\s*(?:{_ZIP})\s+{_TOWN}(?:,\s*{_TOWN})?|\s*,\s*(?:{_ZIP})\b(?:,\s*{_TOWN})?"
         rf"|\s*,\s*{_TOWN}(?:,\s*{_STATE}\b)?(?:,?\s*(?:{_ZIP}))|\s*,\s*{_TOWN},\s*(?:{_ZIP}))")
# a house number and capitalised words with no street word, when a town and postcode follow: 360 Moses Plains,
# New Joelmouth, NT N2P7C8; Studio 6, Lydia Extensions, Port Neil, SO99 2JL
_EN_BARE = (rf"(?:\b(?:Flat|Studio|Apartment|Unit)\s+\w{{1,5}},\s*{_WORD}(?:\s+{_WORD}){{0,2}}|\b\d{{1,6}}[A-Za-z]?"
            rf"(?:\s+{_WORD}){{1,3}}{_EN_UNIT}),\s*{_TOWN}(?:,\s*{_STATE})?,?\s+(?:{_ZIP})")
ADDRESS_PATTERNS = [_EN_BARE, _EN, _DE_NL, _DE_NL_SPLIT, _FR, _ES_IT]
# every pattern starts with a digit or a capital: the lookahead turns other positions away at once
_ADDRESS = re.compile(rf"(?=[\d{_UP[1:-1]}])(?:{'|'.join(f'(?:{p})' for p in ADDRESS_PATTERNS)})(?:{_TAIL})?")


_DIGITS = re.compile(r"\d+")
_BEFORE, _AFTER = 100, 120  # an address starts within this many characters before a digit of it and ends after


def find_addresses(text: str) -> list[tuple[int, int]]:
    """(start, end) of each street address found, the postcode and town after it included when present."""
    # every pattern holds a digit (a house number): search only the windows around digits, not the whole text
    found: list[tuple[int, int]] = []
    start = end = -1
    for digits in _DIGITS.finditer(text):
        if start >= 0 and digits.start() - _BEFORE <= end:
            end = digits.end() + _AFTER
            continue
        if start >= 0:
            found.extend(_search(text, start, end))
        start, end = max(0, digits.start() - _BEFORE), digits.end() + _AFTER
    if start >= 0:
        found.extend(_search(text, start, end))
    return found


def _search(text: str, start: int, end: int) -> list[tuple[int, int]]:
    # windows that overlap were merged: a match lies within one window, found once
    return [(m.start(), m.end()) for m in _ADDRESS.finditer(text, start, min(end, len(text)))]
