"""The labelled set of the names-and-addresses bench (pii_names.py): sentences written for it, with and without a
person's name or a postal address, the spans known.

Templates are written here by hand (requests as users type them: e-mails to draft, letters, CRM notes, travel and
delivery questions). The names and addresses that fill them come from Faker's locale data (seeded), which no
detector measured here reads: the detectors' own lists (names-dataset, spaCy's training data, pyap's and
pii-eraser's patterns) are other sources. Negatives are the same templates filled with phrases that are no one's
name or address, plus sentences with capitalised words that are not names (products, places, titles).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAME_TEMPLATES = [
    "Please draft an email to {n} thanking them for the meeting last Tuesday.",
    "Can you write a short birthday message for {n}? She loves hiking.",
    "{n} asked me to review the quarterly budget, what should I check first?",
    "Summarise this complaint from our customer {n}: the parcel arrived damaged twice.",
    "My manager {n} wants the slides by Friday; help me outline them.",
    "Translate into French: 'Dear {n}, your order has shipped.'",
    "Write a reference letter for {n}, who worked with me for three years as a data analyst.",
    "I had a call with {n} about the contract renewal. Draft the follow-up notes.",
    "How do I tell {n} politely that I can't attend the wedding?",
    "The patient, {n}, reports headaches after starting the new medication. Write a referral summary.",
    "Reply to {n}'s message asking for a refund on invoice 2231.",
    "Create a meeting agenda for me, {n} and the design team.",
    "Write a LinkedIn recommendation for {n}.",
    "Our landlord {n} is raising the rent by 12%. What are my options?",
    "Rewrite this sentence more formally: {n} will be late because of the strike.",
    "Hi, I'm {n} and I need help writing a cover letter for a nursing job.",
    "Compose a condolence card for {n}, whose father passed away last week.",
    "Is it appropriate to cc {n} on an email to the whole department?",
    "Generate a JSON record for employee {n} with fields for role and start date.",
    "Write a toast for my friend {n}'s retirement party.",
    "Signed,\n{n}\nHead of Procurement",
    "From: {n}\nSubject: overdue payment\nPlease advise on how to respond.",
    "The witness {n} stated she saw the car at 9pm. Summarise the statement.",
    "Book a table for two under the name {n} for Saturday at 8.",
    "My daughter {n} is struggling with fractions, explain them for a ten-year-old.",
    "Draft a performance review for {n}: strong on delivery, weak on documentation.",
    "Can you check the grammar: 'me and {n} goes to the office every day'?",
    "Write an apology to {n} for missing the deadline.",
    "{n} and I are planning a trip to Portugal in May; suggest an itinerary.",
    "Schedule a reminder to call {n} tomorrow morning about the lab results.",
]
ADDRESS_TEMPLATES = [
    "Please send the replacement to {a}.",
    "Our new office is at {a}; write a short announcement for the team.",
    "What's the fastest way to get from the airport to {a}?",
    "Ship to: {a}",
    "Fill in this form for me. Address: {a}. Preferred contact: e-mail.",
    "I moved to {a} last month. How do I update my voter registration?",
    "Write a letter to the council about the broken streetlight outside {a}.",
    "The delivery driver couldn't find {a}. Draft a message to the courier.",
    "Invoice to {a}, attention accounts payable.",
    "Is {a} within walking distance of a pharmacy?",
    "Format this as a shipping label: {a}",
    "My billing address is {a} but the card keeps getting declined.",
    "Draft a notice of a noise complaint for the flat at {a}.",
    "We are hosting the party at {a} on Saturday, write the invitation.",
    "Correct the formatting of this address: {a}",
]
NON_NAMES = ["the new intern", "my colleague", "the customer", "our supplier", "my neighbour", "the team lead",
             "the accountant", "my sister", "the client", "our landlord", "the hiring manager", "my tutor",
             "the support team", "everyone on the project", "the board"]
NON_ADDRESSES = ["the office", "the warehouse downtown", "my flat", "the main entrance", "our head office",
                 "the station", "the hotel near the airport", "the store on the corner", "my parents' house",
                 "the community centre"]
# capitalised words that are not a person's name nor a postal address
HARD_NEGATIVES = [
    "Compare the iPhone 15 Pro with the Galaxy S24 for battery life.",
    "Write a product description for the Aurora Desk Lamp.",
    "What's the difference between Python and Rust for a web backend?",
    "Explain how Kubernetes schedules pods across nodes.",
    "Plan three days in Lisbon and two in Porto.",
    "Summarise the causes of the French Revolution.",
    "Is Microsoft Excel or Google Sheets better for pivot tables?",
    "Give me a recipe for Thai Green Curry.",
    "How does the Federal Reserve set interest rates?",
    "Write a haiku about Mount Fuji in winter.",
    "What time zone is New York in compared with London?",
    "Explain the plot of The Great Gatsby in three sentences.",
    "Convert this SQL query to use a LEFT JOIN instead of a subquery.",
    "List the main features of Windows 11 Home.",
    "Suggest names for a bakery in Seattle.",
    "What does the Supreme Court do?",
    "How do I reset my Amazon Prime subscription?",
    "Describe the climate of the Sahara Desert.",
    "Which is bigger, Lake Victoria or Lake Superior?",
    "Write a cover letter for a Junior Software Engineer position at a fintech startup.",
    "Dear Sir or Madam, I am writing to complain about the service.",
    "Create a study plan for the AWS Solutions Architect exam.",
    "What are the Monday and Friday opening hours of most banks?",
    "Tell me about the history of the Golden Gate Bridge.",
    "Explain General Relativity to a high school student.",
]
NAME_LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR", "en_IN"]
ADDRESS_LOCALES = ["en_US", "en_GB", "en_CA", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL"]


@dataclass(frozen=True)
class Example:
    text: str
    spans: tuple[tuple[int, int, str], ...]  # (start, end, "PERSON" | "ADDRESS")
    locale: str
    source: str  # "name", "address", "negative"


def _fill(template: str, slot: str, value: str, kind: str | None, locale: str, source: str) -> Example:
    start = template.index(slot)
    text = template.replace(slot, value, 1)
    return Example(text, ((start, start + len(value), kind),) if kind else (), locale, source)


def _name(fake, rng: random.Random) -> str:
    form = rng.random()
    if form < 0.6:
        return f"{fake.first_name()} {fake.last_name()}"
    if form < 0.75:
        return fake.first_name()
    if form < 0.9:
        return f"{rng.choice(['Mr', 'Ms', 'Dr', 'Mrs'])}. {fake.last_name()}"
    return fake.name()  # the locale's own formats (prefixes, two surnames...)


def examples(seed: int = 20, per_locale: int = 40) -> list[Example]:
    """name sentences per_locale x len(NAME_LOCALES), address sentences the same per address locale, and as many
    negatives as the two together hold (template fillers and hard negatives)."""
    from faker import Faker

    rng = random.Random(seed)
    out: list[Example] = []
    for locale in NAME_LOCALES:
        fake = Faker(locale); fake.seed_instance(seed)
        for _ in range(per_locale):
            out.append(_fill(rng.choice(NAME_TEMPLATES), "{n}", _name(fake, rng), "PERSON", locale, "name"))
    for locale in ADDRESS_LOCALES:
        fake = Faker(locale); fake.seed_instance(seed)
        for _ in range(per_locale):
            address = (fake.address() if rng.random() < 0.7 else fake.street_address()).replace("\n", ", ")
            out.append(_fill(rng.choice(ADDRESS_TEMPLATES), "{a}", address, "ADDRESS", locale, "address"))
    negatives = [_fill(t, "{n}", rng.choice(NON_NAMES), None, "-", "negative") for t in NAME_TEMPLATES]
    negatives += [_fill(t, "{a}", rng.choice(NON_ADDRESSES), None, "-", "negative") for t in ADDRESS_TEMPLATES]
    negatives += [Example(t, (), "-", "negative") for t in HARD_NEGATIVES]
    return out + negatives
