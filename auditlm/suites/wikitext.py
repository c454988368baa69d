"""Readers for the utility (perplexity) suites: WikiText documents, or any text file with one document per line.

- ``wikitext`` — a WikiText file (Merity, Xiong, Bradbury, Socher. *Pointer Sentinel Mixture Models*, ICLR 2017;
  arXiv:1609.07843, 2016): ``wiki.test.raw`` or the tokenised release's ``test.txt``. It is cut into documents
  as lm-evaluation-harness's ``wikitext`` task reads them (the Hub dataset ``EleutherAI/wikitext_document_level``,
  :func:`split_wikitext_documents`) and each document is detokenised as that task's ``wikitext_detokenizer`` does
  (:func:`wikitext_detokenize`).
- ``text_lines`` — a UTF-8 text file with one document per non-empty line, read as it is (no detokenising).

Each item is one document: ``id`` (its position in the file, ``doc-0000`` …, or ``line-N`` for ``text_lines``),
``title`` (the WikiText heading; empty for ``text_lines``), ``text`` (what the model scores), and ``words`` and
``bytes``, the denominators of lm-eval's ``word_perplexity`` and ``byte_perplexity``: lm-eval counts them on the
document *before* detokenising (``len(re.split(r"\\s+", page))`` and its UTF-8 length), and so do these readers.
"""

from __future__ import annotations

import re
from pathlib import Path

from auditlm.suites.datasets import Item, register_reader
from auditlm.suites.provenance import FilesRead

#: Steps of lm-evaluation-harness's ``wikitext_detokenizer`` (``lm_eval/tasks/wikitext/preprocess_wikitext.py``),
#: in its order: ``("str", old, new)`` is a plain replacement, ``("re", pattern, repl)`` a regex substitution.
_DETOKENIZE_STEPS: tuple[tuple[str, str, str], ...] = (
    # contractions (the second step is lm-eval's, kept as it is: it matches only the literal "/' 5/")
    ("str", "s '", "s'"),
    ("re", r"/' [0-9]/", r"/'[0-9]/"),
    # number separators of the tokenised release
    *(("str", f" @{c}@ ", c) for c in "-,."),
    # punctuation
    *(("str", f" {c} ", f"{c} ") for c in ":;.!?,"),
    # spaces inside brackets and quotes
    *(("re", rf"{re.escape(o)}\s*([^{re.escape(c)}]*?)\s*{re.escape(c)}", rf"{o}\1{c}")
      for o, c in ("()", "[]", "{}", '""', "''")),
    # headings, degrees, line ends, the "N" number placeholder and possessives
    ("str", "= = = =", "===="),
    ("str", "= = =", "==="),
    ("str", "= =", "=="),
    ("str", " \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
    ("str", " \n", "\n"),
    ("str", "\n ", "\n"),
    ("str", " N ", " 1 "),
    ("str", " 's", "'s"),
)


def wikitext_detokenize(text: str) -> str:
    """``text`` detokenised as lm-evaluation-harness's ``wikitext_detokenizer`` does (v0.4): ``" @-@ "`` → ``"-"``,
    spaces before punctuation and inside brackets and quotes dropped, heading markers joined (``"= ="`` → ``"=="``),
    spaces around line breaks dropped, ``" 's"`` → ``"'s"``, and so on, in lm-eval's order."""
    for kind, old, new in _DETOKENIZE_STEPS:
        text = text.replace(old, new) if kind == "str" else re.sub(old, new, text)
    return text


def _is_heading(line: str) -> bool:
    """Whether ``line`` opens a new WikiText article: a top-level `` = Title = `` heading (not ``= = Section = =``)."""
    joined = line.replace("= = =", "===").replace("= =", "==").strip()
    return joined.startswith("= ") and joined.endswith(" =")


def split_wikitext_documents(text: str) -> list[str]:
    """The articles of a WikiText file, as the Hub dataset ``EleutherAI/wikitext_document_level`` (which
    lm-evaluation-harness's ``wikitext`` task reads) cuts them: the file's lines (split on ``"\\n"``) are grouped so
    that each top-level heading line starts a new document; a document is its lines joined with ``"\\n"``, heading
    included. A group that is only whitespace (the blank line before the first heading) is dropped; the last group is
    kept as it is, as there."""
    docs: list[str] = []
    lines: list[str] = []
    for line in text.split("\n"):
        if _is_heading(line):
            page = "\n".join(lines)
            if page.strip():
                docs.append(page)
            lines = []
        lines.append(line)
    docs.append("\n".join(lines))
    return docs


def _title(page: str) -> str:
    """The heading of a WikiText document (``" = Robert Boulter = "`` → ``"Robert Boulter"``)."""
    for line in page.split("\n"):
        if _is_heading(line):
            return wikitext_detokenize(line.strip().removeprefix("=").removesuffix("=").strip())
    return ""


def _counts(original: str) -> dict[str, int]:
    """lm-eval's denominators of a document, counted before detokenising: words and UTF-8 bytes."""
    return {"words": len(re.split(r"\s+", original)), "bytes": len(original.encode("utf-8"))}


@register_reader("wikitext")
def read_wikitext(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """One item per WikiText article (:func:`split_wikitext_documents`), its text detokenised
    (:func:`wikitext_detokenize`); a document with nothing but whitespace (a file's trailing blank group) is
    dropped."""
    text = (files or FilesRead()).read_text(path)
    docs = [d for d in split_wikitext_documents(text) if d.strip()]
    if not docs:
        raise ValueError("no WikiText documents (expected ' = Title = ' heading lines)")
    width = max(4, len(str(len(docs) - 1)))
    return [{"id": f"doc-{i:0{width}d}", "title": _title(d), "text": wikitext_detokenize(d), **_counts(d)}
            for i, d in enumerate(docs)]


@register_reader("text_lines")
def read_text_lines(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """One item per non-empty line of a UTF-8 text file (``id`` ``line-N``, N counting from 1), read as it is."""
    text = (files or FilesRead()).read_text(path)
    return [{"id": f"line-{n}", "title": "", "text": line, **_counts(line)}
            for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
