"""Faster drop-in replacements for upstream components, with the same decisions and outputs.

One module per component it replaces: `word_tokenizer` (datatrove's spaCy word tokenizer), `discard_xpaths`
(trafilatura's boilerplate-pruning XPaths), `repetition` (datatrove's Gopher repetition filter), `heuristics`
(its Gopher quality and C4 filters), `minhash_signature`, `minhash_buckets` and `minhash_clusters` (its
MinHash stages), `ftfy_lines` (ftfy's line loop); `thresholds` holds the limit checks the filters share.
Importing the package checks the upstream versions against those the components are verified with
(`versions`).
"""

from data_pipeline.fast.versions import check_versions

check_versions()
