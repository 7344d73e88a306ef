"""Drug names as written in each language's notes, plausible adverse reactions, and Finnish/Estonian inflection."""

from __future__ import annotations

_SCAND = ("nb", "sv", "da")

# ingredient -> {lang: names}; "*" fills every Scandinavian language not listed
DRUG_NAMES: dict[str, dict[str, list[str]]] = {
    "metformin": {"*": ["metformin"], "fi": ["metformiini"], "et": ["metformiin"]},
    "warfarin": {"nb": ["warfarin", "Marevan"], "sv": ["warfarin", "Waran"], "da": ["warfarin", "Marevan"],
                 "fi": ["varfariini", "Marevan"], "et": ["varfariin", "Marevan"]},
    "atorvastatin": {"*": ["atorvastatin", "Lipitor"], "fi": ["atorvastatiini"], "et": ["atorvastatiin"]},
    "simvastatin": {"*": ["simvastatin"], "fi": ["simvastatiini"], "et": ["simvastatiin"]},
    "amoxicillin": {"nb": ["amoksicillin"], "sv": ["amoxicillin"], "da": ["amoxicillin", "Imacillin"],
                    "fi": ["amoksisilliini", "Amoxin"], "et": ["amoksitsilliin"]},
    "phenoxymethylpenicillin": {"nb": ["penicillin", "Apocillin"], "sv": ["penicillin", "Kåvepenin"],
                                "da": ["penicillin", "Primcillin"], "fi": ["penisilliini"], "et": ["penitsilliin"]},
    "lisinopril": {"*": ["lisinopril"], "fi": ["lisinopriili"], "et": ["lisinopriil"]},
    "ibuprofen": {"nb": ["ibuprofen", "Ibux"], "sv": ["ibuprofen", "Ipren"], "da": ["ibuprofen", "Ibumetin"],
                  "fi": ["ibuprofeeni", "Burana"], "et": ["ibuprofeen"]},
    "acetylsalicylic acid": {"nb": ["Albyl-E", "acetylsalisylsyre"], "sv": ["Trombyl", "acetylsalicylsyra"],
                             "da": ["Hjertemagnyl", "acetylsalicylsyre"], "fi": ["asetyylisalisyylihappo", "Primaspan"],
                             "et": ["Aspirin"]},
    "clopidogrel": {"*": ["klopidogrel", "Plavix"], "fi": ["klopidogreeli"], "et": ["klopidogreel"]},
    "metoprolol": {"nb": ["metoprolol", "Selo-Zok"], "sv": ["metoprolol", "Seloken"], "da": ["metoprolol"],
                   "fi": ["metoprololi", "Betaloc"], "et": ["metoprolool"]},
    "furosemide": {"nb": ["furosemid", "Lasix"], "sv": ["furosemid", "Furix"], "da": ["furosemid"],
                   "fi": ["furosemidi"], "et": ["furosemiid"]},
    "amiodarone": {"*": ["amiodaron", "Cordarone"], "fi": ["amiodaroni"], "et": ["amiodaroon"]},
    "digoxin": {"nb": ["digoksin"], "sv": ["digoxin"], "da": ["digoxin"], "fi": ["digoksiini"], "et": ["digoksiin"]},
    "ciprofloxacin": {"nb": ["ciprofloksacin"], "sv": ["ciprofloxacin"], "da": ["ciprofloxacin"],
                      "fi": ["siprofloksasiini"], "et": ["tsiprofloksatsiin"]},
    "trimethoprim": {"*": ["trimetoprim"], "fi": ["trimetopriimi"], "et": ["trimetoprim"]},
    "diclofenac": {"*": ["diklofenak", "Voltaren"], "fi": ["diklofenaakki", "Voltaren"], "et": ["diklofenak"]},
    "prednisolone": {"*": ["prednisolon"], "fi": ["prednisoloni"], "et": ["prednisoloon"]},
    "carbamazepine": {"nb": ["karbamazepin", "Tegretol"], "sv": ["karbamazepin"], "da": ["carbamazepin"],
                      "fi": ["karbamatsepiini"], "et": ["karbamasepiin"]},
    "apixaban": {"*": ["apixaban", "Eliquis"], "fi": ["apiksabaani", "Eliquis"], "et": ["apiksabaan"]},
    "rivaroxaban": {"nb": ["rivaroksaban", "Xarelto"], "sv": ["rivaroxaban", "Xarelto"], "da": ["rivaroxaban"],
                    "fi": ["rivaroksabaani"], "et": ["rivaroksabaan"]},
    "enalapril": {"*": ["enalapril"], "fi": ["enalapriili"], "et": ["enalapriil"]},
    "ramipril": {"*": ["ramipril", "Triatec"], "fi": ["ramipriili"], "et": ["ramipriil"]},
    "amlodipine": {"*": ["amlodipin", "Norvasc"], "fi": ["amlodipiini"], "et": ["amlodipiin"]},
    "allopurinol": {"*": ["allopurinol"], "fi": ["allopurinoli"], "et": ["allopurinool"]},
    "paracetamol": {"nb": ["paracetamol", "Paracet"], "sv": ["paracetamol", "Alvedon"], "da": ["paracetamol", "Pamol"],
                    "fi": ["parasetamoli", "Panadol"], "et": ["paratsetamool"]},
    "tramadol": {"nb": ["tramadol", "Nobligan"], "sv": ["tramadol", "Tradolan"], "da": ["tramadol"],
                 "fi": ["tramadoli"], "et": ["tramadool"]},
    "morphine": {"*": ["morfin"], "fi": ["morfiini"], "et": ["morfiin"]},
    "oxaliplatin": {"nb": ["oksaliplatin"], "sv": ["oxaliplatin"], "da": ["oxaliplatin"], "fi": ["oksaliplatiini"],
                    "et": ["oksaliplatiin"]},
    "capecitabine": {"*": ["kapecitabin", "Xeloda"], "fi": ["kapesitabiini"], "et": ["kapetsitabiin"]},
    "sertraline": {"*": ["sertralin"], "fi": ["sertraliini"], "et": ["sertraliin"]},
    "codeine": {"nb": ["kodein"], "sv": ["kodein"], "da": ["kodein"], "fi": ["kodeiini"], "et": ["kodeiin"]},
}

ADR_PAIRS: dict[str, list[str]] = {
    "lisinopril": ["cough", "angioedema", "hyperkalaemia"], "enalapril": ["cough", "angioedema"],
    "ramipril": ["cough", "hyperkalaemia"], "warfarin": ["bleeding"], "apixaban": ["bleeding"],
    "rivaroxaban": ["bleeding"], "acetylsalicylic acid": ["bleeding"], "clopidogrel": ["bleeding", "rash"],
    "ibuprofen": ["bleeding"], "diclofenac": ["bleeding"], "amoxicillin": ["rash", "urticaria", "anaphylaxis"],
    "phenoxymethylpenicillin": ["rash", "urticaria", "anaphylaxis"], "carbamazepine": ["rash"],
    "allopurinol": ["rash"], "trimethoprim": ["rash"], "atorvastatin": ["myalgia"], "simvastatin": ["myalgia"],
    "metformin": ["diarrhoea", "nausea"], "amiodarone": ["bradycardia"], "metoprolol": ["bradycardia", "dizziness"],
    "digoxin": ["nausea", "bradycardia"], "codeine": ["constipation", "nausea"], "morphine": ["constipation", "nausea"],
    "tramadol": ["nausea", "dizziness"], "oxaliplatin": ["neuropathy", "neutropenia"],
    "capecitabine": ["diarrhoea", "neutropenia"], "sertraline": ["nausea"], "ciprofloxacin": ["diarrhoea", "rash"],
    "furosemide": ["dizziness"], "amlodipine": ["dizziness"],
}

DOSES = ["2,5 mg", "5 mg", "10 mg", "20 mg", "40 mg", "50 mg", "75 mg", "100 mg", "160 mg", "250 mg", "500 mg",
         "1 g", "1000 mg", "8 IE"]


def drug_names(ingredient: str, lang: str) -> list[str]:
    names = DRUG_NAMES[ingredient]
    if lang in names:
        return names[lang]
    return names["*"]


def inflect(word: str, case: str, lang: str) -> str:
    """Finnish/Estonian case forms of a drug name by regular rules (names are loanwords without gradation)."""
    if case == "nom" or lang not in ("fi", "et"):
        return word
    vowel_end = word[-1].lower() in "aeiouyäöõü"
    if lang == "fi":
        a = "a" if any(c in word.lower() for c in "aou") else "ä"
        stem = word if vowel_end else word + "i"
        return {"gen": stem + "n", "part": stem + a, "ela": stem + "st" + a,
                "all": stem + "lle"}[case]
    stem = word if vowel_end else word + "i"
    return {"gen": stem, "part": stem + ("t" if vowel_end else ""), "ela": stem + "st", "all": stem + "le"}[case]
