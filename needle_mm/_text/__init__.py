"""Full-text analysis: texts to terms (``analysis``), the same in every process.

This room knows nothing of files, commits or kernels: ``_index/text`` builds
posting lists from what :class:`Analyzer` makes of texts, and the file
records :meth:`Analyzer.to_json` so queries are analysed as the documents were.
"""

from .analysis import (ANALYZER_VERSION, STEMMER_LANGUAGES, Analyzer, environment, normalize, split,
                       stop_word_languages, stop_word_set, strip_accents, term_key, term_key_list, term_keys)

__all__ = ["ANALYZER_VERSION", "Analyzer", "STEMMER_LANGUAGES", "environment", "normalize", "split", "stop_word_languages",
           "stop_word_set", "strip_accents", "term_key", "term_key_list", "term_keys"]
