"""Generate unmix/data/emoji_table.tsv.gz: every RGI emoji with its exact Unicode group, CLDR short name and keywords.

Sources (Debian packages, read here once; the package never needs them at run time):
  unicode-data       /usr/share/unicode/emoji/emoji-test.txt   sequences, status, group, subgroup, short name
                     /usr/share/unicode/UnicodeData.txt        formal character names ("RED APPLE")
  unicode-cldr-core  /usr/share/unicode/cldr/common/annotations{,Derived}/en.xml   English keywords

One row per fully-qualified emoji or component, in emoji-test.txt's (CLDR) order. Columns:
  codepoints   hex code points of the fully-qualified sequence, space-separated ("1F34E", "0031 FE0F 20E3")
  group        Unicode emoji group ("Food & Drink")
  subgroup     Unicode emoji subgroup ("food-fruit")
  version      emoji version that introduced it ("E0.6")
  name         CLDR short name ("red apple", "flag: France", "thumbs up: medium skin tone")
  keywords     CLDR English keywords joined by " | " ("apple | fruit | red"); empty where CLDR has none yet
  unicode_name formal name of a single code point (variation selector ignored), else empty

The table is gzipped (about 70 KiB instead of 450: most rows are skin-tone variants) with a zero timestamp, so the
same sources give the same bytes; read it with `zcat`.

Usage: python scripts/make_emoji_table.py [--out unmix/data/emoji_table.tsv.gz] [--unicode /usr/share/unicode]
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

VS16 = "\ufe0f"
LINE = re.compile(r"^([0-9A-F ]+?)\s*;\s*([a-z-]+)\s*#\s*\S+\s+(E\d+\.\d+)\s+(.+)$")

NOTICE = """\
# Derived from Unicode data files: emoji-test.txt (Emoji {emoji_version}; (c) 2022 Unicode, Inc.), UnicodeData.txt
# and CLDR {cldr_version} annotations/en.xml and annotationsDerived/en.xml (Copyright (c) 1991-2022 Unicode, Inc.).
# Modified: columns selected and merged by scripts/make_emoji_table.py. Distributed under the Unicode License:
#
# COPYRIGHT AND PERMISSION NOTICE. Permission is hereby granted, free of charge, to any person obtaining a copy of
# the Unicode data files and any associated documentation (the "Data Files") or Unicode software and any associated
# documentation (the "Software") to deal in the Data Files or Software without restriction, including without
# limitation the rights to use, copy, modify, merge, publish, distribute, and/or sell copies of the Data Files or
# Software, and to permit persons to whom the Data Files or Software are furnished to do so, provided that either
# (a) this copyright and permission notice appear with all copies of the Data Files or Software, or (b) this
# copyright and permission notice appear in associated Documentation.
# THE DATA FILES AND SOFTWARE ARE PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
# NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT OF THIRD
# PARTY RIGHTS. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR HOLDERS INCLUDED IN THIS NOTICE BE LIABLE FOR ANY CLAIM, OR
# ANY SPECIAL INDIRECT OR CONSEQUENTIAL DAMAGES, OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR
# PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION
# WITH THE USE OR PERFORMANCE OF THE DATA FILES OR SOFTWARE. Except as contained in this notice, the name of a
# copyright holder shall not be used in advertising or otherwise to promote the sale, use or other dealings in these
# Data Files or Software without prior written authorization of the copyright holder.
#
"""
COLUMNS = ("codepoints", "group", "subgroup", "version", "name", "keywords", "unicode_name")


def read_emoji_test(path: Path) -> tuple[str, list[dict]]:
    """(emoji version, rows) for fully-qualified emoji and components, in file order."""
    version, group, subgroup, rows = "", "", "", []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# Version:"):
            version = line.split(":", 1)[1].strip()
        elif line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            m = LINE.match(line)
            if m is None:
                raise ValueError(f"{path}: cannot parse {line!r}")
            cps, status, ever, name = m.groups()
            if status in ("fully-qualified", "component"):
                rows.append({"codepoints": cps.strip(), "group": group, "subgroup": subgroup, "version": ever,
                             "name": name.strip()})
    return version, rows


def read_annotations(*paths: Path) -> dict[str, list[str]]:
    """{emoji without VS16: keywords}; earlier files win (CLDR's cp values carry no VS16)."""
    keywords: dict[str, list[str]] = {}
    for path in paths:
        for el in ET.parse(path).getroot().iter("annotation"):
            if el.get("type") == "tts" or not el.text:
                continue
            key = el.get("cp", "").replace(VS16, "")
            keywords.setdefault(key, [k.strip() for k in el.text.split("|") if k.strip()])
    return keywords


def read_unicode_names(path: Path) -> dict[int, str]:
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split(";")
        if len(fields) > 1 and not fields[1].startswith("<"):
            names[int(fields[0], 16)] = fields[1]
    return names


def cldr_version(unicode_dir: Path) -> str:
    """CLDR release, e.g. "41", from the LDML DTD (the annotation files' own version is a placeholder)."""
    dtd = (unicode_dir / "cldr" / "common" / "dtd" / "ldml.dtd").read_text(encoding="utf-8")
    m = re.search(r'cldrVersion CDATA #FIXED "([\d.]+)"', dtd)
    return m.group(1) if m else "unknown"


def build(unicode_dir: Path) -> tuple[str, int]:
    """(table text, number of emoji rows)."""
    emoji_version, rows = read_emoji_test(unicode_dir / "emoji" / "emoji-test.txt")
    ann = unicode_dir / "cldr" / "common"
    keywords = read_annotations(ann / "annotations" / "en.xml", ann / "annotationsDerived" / "en.xml")
    formal = read_unicode_names(unicode_dir / "UnicodeData.txt")
    out = [NOTICE.format(emoji_version=emoji_version, cldr_version=cldr_version(unicode_dir)) + "\t".join(COLUMNS)]
    for row in rows:
        cps = [int(c, 16) for c in row["codepoints"].split()]
        text = "".join(map(chr, cps)).replace(VS16, "")
        bare = [c for c in cps if c != 0xFE0F]
        row["keywords"] = " | ".join(keywords.get(text, []))
        row["unicode_name"] = formal.get(bare[0], "") if len(bare) == 1 else ""
        if any("\t" in row[c] or "\n" in row[c] for c in COLUMNS):
            raise ValueError(f"tab or newline in {row}")
        out.append("\t".join(row[c] for c in COLUMNS))
    return "\n".join(out) + "\n", len(rows)


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unicode", type=Path, default=Path("/usr/share/unicode"), help="Debian unicode-data root")
    ap.add_argument("--out", type=Path, default=here / "unmix" / "data" / "emoji_table.tsv.gz")
    args = ap.parse_args()
    text, count = build(args.unicode)
    tmp = args.out.with_name(f".{args.out.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({count} emoji, {args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
