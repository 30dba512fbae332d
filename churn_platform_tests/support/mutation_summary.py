"""Summarize a mutmut run per module: killed, survived, timeout, no tests; and list every survivor
that docs/mutation-testing.md does not explain as equivalent (exit status 1 if there is one).

    python -m churn_platform_tests.support.mutation_summary [mutants-dir]

Reads mutmut's own results (mutants/**/*.py.meta) with mutmut's own exit-code table.
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENTS_DOC = ROOT / "docs" / "mutation-testing.md"
COLUMNS = ("killed", "survived", "timeout", "no tests", "not checked", "other")
_MUTANT_NAME = re.compile(r"`(churn_platform\.[\w.]+__mutmut_\d+)`")


def results(mutants: Path) -> dict[str, dict[str, str]]:
    """{module: {mutant name: status}} for every mutated file of the run."""
    by_module = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        module = meta.relative_to(mutants).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        by_module[module] = {name: status_by_exit_code[code] for name, code in codes.items()}
    return by_module


def equivalents(doc: Path = EQUIVALENTS_DOC) -> set[str]:
    """Mutant names the documentation explains as equivalent (each in backquotes)."""
    return set(_MUTANT_NAME.findall(doc.read_text())) if doc.exists() else set()


def column(status: str) -> str:
    return status if status in COLUMNS else "other"


def table(by_module: dict[str, dict[str, str]], explained: set[str]) -> str:
    """A Markdown table, one row per module and a total; killed % counts timeouts as killed, of
    the mutants checked."""
    lines = ["| module | mutants | " + " | ".join(COLUMNS) + " | equivalent | killed % |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    total, total_equivalent = Counter(), 0
    for module, statuses in [*by_module.items(), ("total", None)]:
        if statuses is None:
            counts, equivalent = total, total_equivalent
        else:
            counts = Counter(column(s) for s in statuses.values())
            equivalent = sum(1 for n, s in statuses.items() if s == "survived" and n in explained)
            total.update(counts)
            total_equivalent += equivalent
        mutants = sum(counts.values())
        checked = mutants - counts["not checked"]
        killed = counts["killed"] + counts["timeout"]
        percent = f"{100 * killed / checked:.1f}" if checked else "-"
        lines.append(f"| {module} | {mutants} | " + " | ".join(str(counts[c]) for c in COLUMNS)
                     + f" | {equivalent} | {percent} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    mutants = Path(argv[0]) if argv else ROOT / "mutants"
    by_module = results(mutants)
    if not by_module:
        print(f"no mutmut results under {mutants}: run `make mutation` first", file=sys.stderr)
        return 2
    explained = equivalents()
    print(table(by_module, explained))
    unanswered = sorted(name for statuses in by_module.values()
                        for name, status in statuses.items()
                        if status in ("survived", "no tests") and name not in explained)
    if unanswered:
        print(f"\n{len(unanswered)} surviving mutants neither killed nor explained as equivalent"
              f" in {EQUIVALENTS_DOC.relative_to(ROOT)} (`mutmut show NAME` shows one):")
        print("\n".join(f"  {name}" for name in unanswered))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
