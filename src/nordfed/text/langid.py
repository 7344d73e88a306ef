"""Language identification for Nordic clinical notes, independent of the site a note comes from.

Stopword votes decide; characters that belong to only some of the languages (õ/ü: Estonian, æ/ø:
Danish/Norwegian, å: Scandinavian) break ties between close relatives.
"""

from __future__ import annotations

import re
from itertools import chain

from nordfed.text.lexicon import LANGS

_STOP = {
    "nb": "og ikke av etter uten ble er har hun han det som med til på for fra ingen mot også blir hadde "
          "være noe skal kan vil eller hos nå både pasienten pasient innlagt vurdering hjem etter hjemme "
          "tidligere fikk ga mulig fjernet ingen sykehus behandling",
    "da": "og ikke af efter uden blev er har hun han det som med til på for fra ingen mod også bliver "
          "havde være noget skal kan vil eller hos nu både patienten patient indlagt vurdering hjem "
          "tidligere fik gav mulig fjernet sygehus behandling hjemmet nogen",
    "sv": "och inte av efter utan blev är har hon han det som med till på för från ingen inget inga mot "
          "också blir hade vara något ska kan vill eller hos nu både patienten patient inlagd bedömning "
          "hem tidigare fick gav möjlig borttagen sjukhus behandling ej",
    "fi": "ja ei ole on oli että myös sekä kanssa potilas potilaalla potilaan tai kun jälkeen ennen "
          "hoito hoitoa aiemmin sairaala kotiin todettu saanut ollut mutta nyt tehty käytössä lääkitys "
          "tutkimus tahdistin vuonna",
    "et": "ja ei ole on oli et ka koos patsient patsiendil patsiendi või kui pärast enne ravi varem "
          "haigla koju tehtud olnud kuid aga nüüd kasutusel ravim uuring aastal ning pole samuti",
}
_STOPSETS = {lang: set(words.split()) for lang, words in _STOP.items()}
_WORD_LANGS: dict[str, tuple[str, ...]] = {}
for _lang, _words in _STOPSETS.items():
    for _w in _words:
        _WORD_LANGS[_w] = (*_WORD_LANGS.get(_w, ()), _lang)
_WORD = re.compile(r"[^\W\d_]+")
_CACHE_MAX = 200_000


_DA_ONLY = (" af ", " efter ", " blev ", " uden ", " mod ", " nu ", "hed ", "ligt")
_NB_ONLY = (" av ", " etter ", " ble ", " uten ", " mot ", " nå ", "het ", "lig ")


class _ChunkVotes(dict):
    """Piece of text between spaces -> one language code per vote its words cast (words never span white space)."""

    def __missing__(self, chunk: str) -> tuple[str, ...]:
        out = self[chunk] = tuple(lang for w in _WORD.findall(chunk) for lang in _WORD_LANGS.get(w, ()))
        return out


_CHUNK_VOTES = _ChunkVotes()


def identify(text: str) -> str:
    """The most likely of nb, sv, da, fi, et for ``text`` (lowercase ISO 639 codes as simplemma uses)."""
    low = text[:900].lower()
    # stopword votes, counted in C from cached per-chunk votes; they are whole numbers, so the float scores equal
    # adding the votes one by one
    if len(_CHUNK_VOTES) > _CACHE_MAX:
        _CHUNK_VOTES.clear()
    votes = list(chain.from_iterable(map(_CHUNK_VOTES.__getitem__, low.split(" "))))
    score = {lang: float(votes.count(lang)) for lang in LANGS}
    if "õ" in low or "ü" in low:
        score["et"] += 5 + 2 * low.count("õ")
    if "æ" in low or "ø" in low:
        score["nb"] += 2
        score["da"] += 2
        score["sv"] -= 3
    n_aeoe = low.count("ä") + low.count("ö")
    if n_aeoe:
        # never written in Danish or Norwegian (outside names)
        for lang in ("sv", "fi", "et"):
            score[lang] += 1 + min(n_aeoe, 10) * 0.3
        score["nb"] -= min(n_aeoe, 10) * 0.5
        score["da"] -= min(n_aeoe, 10) * 0.5
    if "å" in low:
        score["fi"] -= 3
        score["et"] -= 3
    for pat, lang, w in (("ää", "fi", 2), ("yy", "fi", 1), ("aa", "et", 0.5), ("ij", "fi", 0)):
        if pat in low:
            score[lang] += w
    # Danish and Norwegian share most words: their spelling differences decide
    da_only = sum(map(low.count, _DA_ONLY))
    nb_only = sum(map(low.count, _NB_ONLY))
    score["da"] += 1.5 * da_only
    score["nb"] += 1.5 * nb_only
    return max(score, key=lambda k: score[k])
