"""Write needle_mm/_text/stopwords/<language>.txt from the Snowball project's stop-word lists.

The lists are ``algorithms/<language>/stop.txt`` of the Snowball website's
repository (https://github.com/snowballstem/snowball-website, 3-clause BSD,
Copyright (c) 2001 Dr Martin Porter, (c) 2002 Richard Boulton). Their
comments (after ``|``) are dropped; every word is kept, in the list's order,
once. The analyser (needle_mm/_text/analysis.py) decides what a word means.

    python tools/make_stopwords.py /path/to/snowball-website [--commit <sha>]
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

HEADER = """\
# Snowball stop-word list: {language}
# From the Snowball project, https://github.com/snowballstem/snowball-website
# algorithms/{language}/stop.txt at commit {commit}; comments dropped, one word a line.
#
# Copyright (c) 2001, Dr Martin Porter,
# Copyright (c) 2002, Richard Boulton.
# All rights reserved.
#
# Redistribution and use in source and binary forms, with or without modification, are permitted
# provided that the following conditions are met:
# 1. Redistributions of source code must retain the above copyright notice, this list of conditions
#    and the following disclaimer.
# 2. Redistributions in binary form must reproduce the above copyright notice, this list of
#    conditions and the following disclaimer in the documentation and/or other materials provided
#    with the distribution.
# 3. Neither the name of the copyright holder nor the names of its contributors may be used to
#    endorse or promote products derived from this software without specific prior written
#    permission.
#
# THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR
# IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
# FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR
# CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
# DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,
# DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER
# IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT
# OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""


def words_of(text: str) -> list[str]:
    out, seen = [], set()
    for line in text.splitlines():
        for word in line.split("|", 1)[0].split():
            if word not in seen:
                seen.add(word)
                out.append(word)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("snowball_website", help="a git checkout (or bare repository) of snowball-website")
    ap.add_argument("--commit", default="HEAD")
    args = ap.parse_args()
    repo = args.snowball_website
    commit = subprocess.run(["git", "-C", repo, "rev-parse", args.commit], check=True, capture_output=True,
                            text=True).stdout.strip()
    names = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", commit, "algorithms"], check=True,
                           capture_output=True, text=True).stdout.split()
    out_dir = Path(__file__).resolve().parents[1] / "needle_mm" / "_text" / "stopwords"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        parts = name.split("/")
        if len(parts) != 3 or parts[2] != "stop.txt":
            continue
        language = parts[1]
        text = subprocess.run(["git", "-C", repo, "show", f"{commit}:{name}"], check=True,
                              capture_output=True).stdout.decode("utf-8")
        words = words_of(text)
        (out_dir / f"{language}.txt").write_text(HEADER.format(language=language, commit=commit)
                                                 + "\n".join(words) + "\n", encoding="utf-8")
        print(f"{language}: {len(words)} words")


if __name__ == "__main__":
    main()
