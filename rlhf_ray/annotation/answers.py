"""Answer keys: gold answers and resolved disputes, one JSON object `{item_id, answer}` per line.

Curate scores annotators and settles consensus with them, and the workbench serves gold tasks from them
(and writes resolved disputes in this form). Both read them here, so they agree on what an answer is: a
ranking answer (a full order, best first) reduces to the index ranked first, the form a pairwise choice takes.
"""

from __future__ import annotations

import json
from pathlib import Path


class AnswerFileError(ValueError):
    """An answer file that is missing or holds a line that is not `{item_id, answer}`; the message says which."""


def read_answers(path: str | None, what: str) -> dict[str, str]:
    """{item_id: answer} from the JSONL file at `path`, {} when no path is set; `what` names the file in errors.

    Blank lines are skipped; a missing file or a malformed line raises `AnswerFileError` naming the path, the
    line number and the expected fields, so the setting to fix is obvious.
    """
    if not path:
        return {}
    if not Path(path).is_file():
        raise AnswerFileError(f"{what} file {path!r} does not exist")
    answers: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            answer = record["answer"]
            answers[str(record["item_id"])] = str(answer[0]) if isinstance(answer, list) else str(answer)
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as error:
            raise AnswerFileError(f"{what} file {path!r} line {number}: expected {{item_id, answer}}, "
                                  f"got {line[:80]!r} ({type(error).__name__})") from None
    return answers
