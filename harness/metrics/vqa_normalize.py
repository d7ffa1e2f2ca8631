"""Answer normalisation of the official VQA v2 evaluation, transcribed rule for rule.

Source: GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (master, the Python 3
version whose ``evaluate`` normalises only when the ten human answers disagree), class ``VQAEval``:
``contractions``, ``manualMap``, ``articles``, ``periodStrip``, ``commaStrip``, ``punct``,
``processPunctuation`` and ``processDigitArticle``. The tables are copied verbatim, including entries that
can never fire (capitalised keys such as ``"Im"`` never match because ``processDigitArticle`` lowercases
first) and odd ones (``"somebody'd" -> "somebodyd"``): reproducing the official numbers means reproducing
its quirks, so do not "fix" anything here.
"""

from __future__ import annotations

import re

__all__ = [
    "ARTICLES",
    "COMMA_STRIP",
    "CONTRACTIONS",
    "MANUAL_MAP",
    "PERIOD_STRIP",
    "PUNCT",
    "normalize_answer",
    "process_digit_article",
    "process_punctuation",
    "strip_whitespace",
]

# fmt: off
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}

# Number words up to ten become digits; "none" counts as zero.
MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES: tuple[str, ...] = ("a", "an", "the")

# The official pattern is "(?!<=\d)(\.)(?!\d)". "(?!<=\d)" is a *lookahead* for the literal text "<=" and a
# digit (a typo for the lookbehind "(?<!\d)"), so it never blocks anything: every period NOT followed by a
# digit is removed ("3.5" keeps its period, "5." and "end." lose theirs). Kept verbatim.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# Note: no apostrophe, colon or period in the master list (an older revision had "'" and ":").
PUNCT: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)
# fmt: on

# vqaEval.py calls ``self.periodStrip.sub("", outText, re.UNICODE)``: the third positional argument of
# Pattern.sub is *count*, so the official code removes at most int(re.UNICODE) == 32 periods. Replicated.
_PERIOD_STRIP_COUNT = int(re.UNICODE)


def strip_whitespace(answer: str) -> str:
    """``answer.replace('\\n', ' ').replace('\\t', ' ').strip()``, applied by the official evaluator to every
    result answer and every ground-truth answer before anything else."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(in_text: str) -> str:
    """``VQAEval.processPunctuation``.

    For each punctuation mark: if the *original* text has that mark next to a space, or the original text
    contains a digit-comma-digit group anywhere ("1,000"), every occurrence of the mark is deleted;
    otherwise every occurrence becomes a space. Then periods not followed by a digit are removed (at most 32,
    see ``_PERIOD_STRIP_COUNT``).
    """
    out_text = in_text
    # The condition looks at in_text, not at the progressively edited out_text: official behaviour.
    has_digit_comma = COMMA_STRIP.search(in_text) is not None
    for p in PUNCT:
        if p not in out_text:  # fast path: replacing an absent mark is a no-op either way
            continue
        if (p + " " in in_text or " " + p in in_text) or has_digit_comma:
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return PERIOD_STRIP.sub("", out_text, count=_PERIOD_STRIP_COUNT)


def process_digit_article(in_text: str) -> str:
    """``VQAEval.processDigitArticle``: lowercase, split on whitespace, map number words to digits, drop
    articles, expand apostrophe-less contractions ("dont" -> "don't"), join with single spaces."""
    words = []
    for word in in_text.lower().split():
        # Official: ``self.manualMap.setdefault(word, word)``, which also grows the map; same result.
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(answer: str) -> str:
    """The official answer normalisation: whitespace clean-up, ``processPunctuation``, ``processDigitArticle``.

    This is what the evaluator compares when the ten human answers of a question are not all identical (the
    usual case). Use it to build answer vocabularies. Whitespace clean-up first is a no-op for answers without
    newlines or tabs, and matches what the evaluator does to result answers before normalising them.
    """
    return process_digit_article(process_punctuation(strip_whitespace(answer)))
