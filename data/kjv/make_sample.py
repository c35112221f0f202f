#!/usr/bin/env python3
"""Writes data/kjv/kjv-sample.txt from Debian's bible-kjv-text package (the King James Version, 1611,
public domain), read with its `bible` program (package bible-kjv):

    apt-get install bible-kjv && data/kjv/make_sample.py > data/kjv/kjv-sample.txt

One chapter per line, its verses joined by spaces without their numbers. Every 6th chapter of the
1,189 (Genesis 1, Genesis 7, ...) is taken; every 5th of those goes to the held-out part, written
after the training part, so the two parts come from the same books: lines 1-159 train, 160-199 held out.

    data/kjv/make_sample.py --offset 3 --all

prints other chapters (Genesis 4, Genesis 10, ...: none of the sample's) in the same form, all of them:
the private text bench/domain_shift.sh gives the agents.
"""
import argparse
import re
import subprocess

parser = argparse.ArgumentParser()
parser.add_argument("--offset", type=int, default=0, help="take chapters i with i %% 6 == OFFSET (default 0: the sample's)")
parser.add_argument("--all", action="store_true", help="every chapter taken, in order, with no held-out part")
parser.add_argument("--verses-per-line", type=int, default=0,
                    help="with --all: N verses per line (chapters split, about N x 35 tokens a line) instead of a chapter")
args = parser.parse_args()

text = subprocess.run(["bible", "-l0", "Ge1:1-Re22:21"], check=True, capture_output=True, text=True).stdout
chapters = []
for line in text.split("\n"):
    verse = re.match(r"^\s+\d+ (.*)$", line)
    if verse:
        chapters[-1].append(verse.group(1).strip())
    elif re.match(r"^\S.* \d+$", line):
        chapters.append([])
if args.all and args.verses_per_line > 0:
    taken = [verses for i, verses in enumerate(chapters) if i % 6 == args.offset]
    n = args.verses_per_line
    print("\n".join(" ".join(verses[k:k + n]) for verses in taken for k in range(0, len(verses), n)))
    raise SystemExit(0)
chosen = [" ".join(verses) for i, verses in enumerate(chapters) if i % 6 == args.offset]
if args.all:
    print("\n".join(chosen))
    raise SystemExit(0)
train = [c for i, c in enumerate(chosen) if i % 5 != 4]
heldout = [c for i, c in enumerate(chosen) if i % 5 == 4]
print("\n".join(train + heldout))
