#!/usr/bin/env python3
"""Writes data/kjv/kjv-sample.txt from Debian's bible-kjv-text package (the King James Version, 1611,
public domain), read with its `bible` program (package bible-kjv):

    apt-get install bible-kjv && data/kjv/make_sample.py > data/kjv/kjv-sample.txt

One chapter per line, its verses joined by spaces without their numbers. Every 6th chapter of the
1,189 (Genesis 1, Genesis 7, ...) is taken; every 5th of those goes to the held-out part, written
after the training part, so the two parts come from the same books: lines 1-159 train, 160-199 held out.
"""
import re
import subprocess

text = subprocess.run(["bible", "-l0", "Ge1:1-Re22:21"], check=True, capture_output=True, text=True).stdout
chapters = []
for line in text.split("\n"):
    verse = re.match(r"^\s+\d+ (.*)$", line)
    if verse:
        chapters[-1].append(verse.group(1).strip())
    elif re.match(r"^\S.* \d+$", line):
        chapters.append([])
chosen = [" ".join(verses) for i, verses in enumerate(chapters) if i % 6 == 0]
train = [c for i, c in enumerate(chosen) if i % 5 != 4]
heldout = [c for i, c in enumerate(chosen) if i % 5 == 4]
print("\n".join(train + heldout))
