"""Verse-aligned Spanish-English pairs from the Debian SWORD modules, split by book, as jsonl for train_translation.py.

    apt-get install -y diatheke sword-text-sparv sword-text-web
    python examples/build_verse_pairs.py --output_dir data/verses

Writes train.jsonl, validation.jsonl and test.jsonl (fields `book`, `chapter`, `verse`, `es`, `en`) into
`--output_dir`. Reina-Valera 1909 (`spaRV1909eb`) and the World English Bible (`engWEB2015eb`) are public domain.
Each module is read with one `diatheke` call in OSIS format (one call per verse takes minutes; this takes ~30 s),
whose `<w>` word tags show where plain output glues two words after a removed footnote ("only bornSon",
"windblows"). Pairs are matched by (book, chapter, verse), never by line number, over the 66 books both modules
hold (the English module also has the deuterocanon). Only the text after each verse's reference is kept: diatheke
repeats psalm titles in front of thousands of later verses. Dropped: verse 1 of every psalm (Spanish puts the
psalm's title inside verse 1, English in front of it, where it can't be told from a repeated one), the WEB glossary
after Revelation 22:21, empty verses, and any verse still showing a glued lowercase-uppercase junction after the
repair. The split is by whole book, so no test verse has a near-copy (a
parallel passage of the same book) in training.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

MODULES = {"es": "spaRV1909eb", "en": "engWEB2015eb"}
# Whole books held out (diatheke's English book names). Varied genres, ~5% of the verses each.
VALIDATION_BOOKS = ("Ruth", "Jonah", "Philippians", "I John")
TEST_BOOKS = ("Esther", "Joel", "Colossians", "II John", "III John")
VERSE = re.compile(r"(?P<book>(?:I{1,3} )?[A-Z][A-Za-z ]*?) (?P<chapter>\d+):(?P<verse>\d+): ")
GLUED = re.compile(r"[a-záéíóúñ][A-ZÁÉÍÓÚÑ]")


def read_module(module: str) -> str:
    """The whole module as diatheke's OSIS output (one call; ~20 s for the WEB)."""
    if shutil.which("diatheke") is None:
        raise RuntimeError("diatheke is not installed: apt-get install -y diatheke sword-text-sparv sword-text-web")
    result = subprocess.run(
        ["diatheke", "-b", module, "-f", "osis", "-k", "Genesis-Revelation"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    if not result.stdout.strip() or "Genesis 1:1:" not in result.stdout:
        raise RuntimeError(f"diatheke returned no verses for module {module!r}; is its sword-text package installed?")
    return result.stdout


def clean_osis(text: str) -> str:
    """OSIS verse text -> plain text. A word tag that touches another word (a footnote was removed there) gets a
    space, then every tag goes."""
    text = re.sub(r"</w>(?=<w[ >]|\w)", "</w> ", text)
    text = re.sub(r"(?<=\w)<w([ >])", r" <w\1", text)
    text = re.sub(r"<(?:milestone|l|lg)\b[^>]*>", " ", text)  # poetry line breaks
    text = re.sub(r"<[^>]*>", "", text)
    text = re.sub(r"\s+([,.;:!?)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    return re.sub(r"\s+", " ", text).strip()


def parse_verses(osis: str) -> dict[tuple[str, int, int], tuple[str, str]]:
    """(book, chapter, verse) -> (text in front of the reference on its line, verse text), each verse's own line."""
    verses = {}
    for line in osis.splitlines():
        match = VERSE.search(line)
        if match is None:  # module name, or the glossary once a line holds no reference
            continue
        key = (match["book"].strip(), int(match["chapter"]), int(match["verse"]))
        verses.setdefault(key, (line[: match.start()].strip(), line[match.end() :]))
    return verses


def build_pairs(spanish: str, english: str) -> tuple[list[dict], dict[str, int]]:
    """Aligned, cleaned pairs in Bible order and counts of what was dropped and why."""
    es, en = parse_verses(spanish), parse_verses(english)
    dropped = {"not in both modules": 0, "psalm verse 1": 0, "empty": 0, "glued words": 0, "glossary": 0}
    pairs = []
    for key, (_, es_text) in es.items():
        if key not in en:
            dropped["not in both modules"] += 1
            continue
        en_text = en[key][1]
        if key[0] == "Psalms" and key[2] == 1:
            dropped["psalm verse 1"] += 1
            continue
        if key == ("Revelation of John", 22, 21):  # the WEB's glossary runs on after the last verse
            en_text = en_text.split("The following words used in the World English Bible", 1)[0]
            dropped["glossary"] += 1
        es_clean, en_clean = clean_osis(es_text), clean_osis(en_text)
        if not es_clean or not en_clean:
            dropped["empty"] += 1
            continue
        if any(GLUED.search(word) for word in (es_clean + " " + en_clean).split() if not word.isupper()):
            dropped["glued words"] += 1
            continue
        book, chapter, verse = key
        pairs.append({"book": book, "chapter": chapter, "verse": verse, "es": es_clean, "en": en_clean})
    dropped["English verses outside the 66 books"] = len({k for k in en if k[0] not in {b for b, _, _ in es}})
    return pairs, dropped


def split_by_book(pairs: list[dict]) -> dict[str, list[dict]]:
    books = {pair["book"] for pair in pairs}
    missing = [b for b in (*VALIDATION_BOOKS, *TEST_BOOKS) if b not in books]
    if missing:
        raise ValueError(f"Held-out books {missing} are not among the aligned books {sorted(books)}.")
    splits = {"train": [], "validation": [], "test": []}
    for pair in pairs:
        name = "validation" if pair["book"] in VALIDATION_BOOKS else "test" if pair["book"] in TEST_BOOKS else "train"
        splits[name].append(pair)
    return splits


def write_splits(splits: dict[str, list[dict]], output_dir: Path) -> None:
    """Writes into a temporary folder next to `output_dir`, then moves the files in: never a half-written split."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir) as staging:
        for name, rows in splits.items():
            with open(Path(staging, f"{name}.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        for name in splits:
            os.replace(Path(staging, f"{name}.jsonl"), output_dir / f"{name}.jsonl")


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--max_verses", type=int, default=None, help="Keep only every n-th verse (smoke tests).")
    args = parser.parse_args(argv)
    pairs, dropped = build_pairs(read_module(MODULES["es"]), read_module(MODULES["en"]))
    splits = split_by_book(pairs)
    if args.max_verses:
        splits = {name: rows[:: max(1, len(pairs) // args.max_verses)] for name, rows in splits.items()}
    write_splits(splits, args.output_dir)
    counts = {name: len(rows) for name, rows in splits.items()}
    print(json.dumps({"pairs": counts, "dropped": dropped}, indent=1))
    return counts


if __name__ == "__main__":
    main()
