"""Phrase banks for synthetic notes in Norwegian bokmål, Swedish and Danish.

Slots: {imp} / {imp:def} an implant (indefinite/definite form), {imp2} a second implant type, {model} a
manufacturer model, {cmp} a compound naming the implant, {date}, {year}; {drug}, {dose}, {reac}.
Implant templates are grouped by the gold context class; a template prefixed with ``!`` is one the ConText
rules are expected to get wrong (kept rare: it is what the trainable classifier is for).
"""

from __future__ import annotations

IMPLANTS = {
    "nb": {
        "pacemaker": {"indef": ["pacemaker", "pacemaker", "PM", "hjertepacemaker"], "def": ["pacemakeren"],
                      "cmp": ["pacemakerkontroll", "pacemakerpoliklinikken"]},
        "icd": {"indef": ["ICD", "ICD", "implanterbar hjertestarter"], "def": ["ICD-en", "hjertestarteren"],
                "cmp": ["ICD-kontroll"]},
        "cochlear_implant": {"indef": ["cochleaimplantat", "CI", "kokleaimplantat"], "def": ["cochleaimplantatet"],
                             "cmp": ["CI-bruker"]},
        "neurostimulator": {"indef": ["dyp hjernestimulator", "DBS", "nevrostimulator", "ryggmargsstimulator"],
                            "def": ["nevrostimulatoren"], "cmp": ["DBS-behandling"]},
        "insulin_pump": {"indef": ["insulinpumpe"], "def": ["insulinpumpen"], "cmp": ["insulinpumpebruker"]},
        "coronary_stent": {"indef": ["koronarstent", "stent i LAD", "medikamentavgivende stent"],
                           "def": ["stenten", "koronarstenten"], "cmp": ["stentbehandlet"]},
        "vascular_stent": {"indef": ["karotisstent", "aortastentgraft"], "def": ["karotisstenten"],
                           "cmp": ["EVAR-kontroll"]},
        "hip_prosthesis": {"indef": ["hofteprotese", "totalprotese i hofte", "hofteleddsprotese"],
                           "def": ["hofteprotesen"], "cmp": ["hofteprotesekontroll"]},
        "knee_prosthesis": {"indef": ["kneprotese", "kneleddsprotese"], "def": ["kneprotesen"],
                            "cmp": ["kneprotesekontroll"]},
        "aneurysm_clip": {"indef": ["aneurismeklips", "aneurismeclips"], "def": ["aneurismeklipsen"],
                          "cmp": ["aneurismeklipsoperert"]},
    },
    "sv": {
        "pacemaker": {"indef": ["pacemaker", "pacemaker", "PM", "hjärtpacemaker"], "def": ["pacemakern"],
                      "cmp": ["pacemakerkontroll", "pacemakermottagningen"]},
        "icd": {"indef": ["ICD", "ICD", "implanterbar defibrillator"], "def": ["ICD:n", "defibrillatorn"],
                "cmp": ["ICD-kontroll"]},
        "cochlear_implant": {"indef": ["kokleaimplantat", "cochleaimplantat", "CI"], "def": ["kokleaimplantatet"],
                             "cmp": ["CI-bärare"]},
        "neurostimulator": {"indef": ["DBS", "neurostimulator", "ryggmärgsstimulator", "hjärnstimulator"],
                            "def": ["neurostimulatorn"], "cmp": ["DBS-behandling"]},
        "insulin_pump": {"indef": ["insulinpump"], "def": ["insulinpumpen"], "cmp": ["insulinpumpsbehandling"]},
        "coronary_stent": {"indef": ["kranskärlsstent", "stent i LAD", "koronarstent"], "def": ["stenten"],
                           "cmp": ["stentbehandlad"]},
        "vascular_stent": {"indef": ["karotisstent", "stentgraft"], "def": ["stentgraften"],
                           "cmp": ["EVAR-kontroll"]},
        "hip_prosthesis": {"indef": ["höftprotes", "höftledsprotes"], "def": ["höftprotesen"],
                           "cmp": ["höftprotesoperation"]},
        "knee_prosthesis": {"indef": ["knäprotes", "knäledsprotes"], "def": ["knäprotesen"],
                            "cmp": ["knäprotesoperation"]},
        "aneurysm_clip": {"indef": ["aneurysmclips", "aneurysmklips"], "def": ["aneurysmclipset"],
                          "cmp": ["aneurysmclipsopererad"]},
    },
    "da": {
        "pacemaker": {"indef": ["pacemaker", "pacemaker", "PM"], "def": ["pacemakeren"],
                      "cmp": ["pacemakerkontrol", "pacemakerambulatoriet"]},
        "icd": {"indef": ["ICD", "ICD", "implanterbar defibrillator", "hjertestarter"], "def": ["ICD'en"],
                "cmp": ["ICD-kontrol"]},
        "cochlear_implant": {"indef": ["cochlear implant", "CI", "cochlearimplantat"], "def": ["CI'et"],
                             "cmp": ["CI-bruger"]},
        "neurostimulator": {"indef": ["DBS", "neurostimulator", "rygmarvsstimulator", "hjernestimulator"],
                            "def": ["neurostimulatoren"], "cmp": ["DBS-behandling"]},
        "insulin_pump": {"indef": ["insulinpumpe"], "def": ["insulinpumpen"], "cmp": ["insulinpumpebehandling"]},
        "coronary_stent": {"indef": ["koronarstent", "stent i LAD"], "def": ["stenten"], "cmp": ["stentbehandlet"]},
        "vascular_stent": {"indef": ["karotisstent", "stentgraft"], "def": ["stentgraftet"],
                           "cmp": ["EVAR-kontrol"]},
        "hip_prosthesis": {"indef": ["hofteprotese", "hoftealloplastik"], "def": ["hofteprotesen"],
                           "cmp": ["hofteprotesekontrol"]},
        "knee_prosthesis": {"indef": ["knæprotese", "knæalloplastik"], "def": ["knæprotesen"],
                            "cmp": ["knæprotesekontrol"]},
        "aneurysm_clip": {"indef": ["aneurismeclips", "aneurysmeclips"], "def": ["aneurismeclipsen"],
                          "cmp": ["aneurismeclipsopereret"]},
    },
}

IMPLANT_TEMPLATES = {
    "nb": {
        "present": [
            "Pasienten har {imp} implantert {year}.", "{imp} implantert {date} ved {hospital}.",
            "Har {imp} ({model}) siden {year}.", "{model} {imp} innsatt {year}, fungerer fint.",
            "Kjent {imp}, siste kontroll {date} uten anmerkning.", "{cmp} {date}: normal funksjon.",
            "Røntgen thorax viser {imp} in situ.", "{imp:def} er MR-betinget ifølge implantatkortet.",
            "Implantatkort medbrakt: {model}.", "Det er kjent {imp} fra {year}.",
            "{imp:def} ble satt inn i {year} og fungerer tilfredsstillende.", "Har fått {imp} {date}.",
            "Innlagt for kontroll av {imp:def}.", "Status etter innsetting av {imp} {year}.",
            "Ingen komplikasjoner etter innsetting av {imp}.",
            "!Ikke MR pga. {imp}.", "!{imp:def} ble vurdert fjernet, men beholdes.",
        ],
        "negated": [
            "Ingen {imp}.", "Har ikke {imp}.", "Pasienten har ikke {imp} eller {imp2}.", "{imp}: nei.",
            "Ingen {imp}, {imp2} eller annet implantat.", "Benekter {imp}.", "Det er ikke satt inn {imp}.",
            "Pasienten har aldri hatt {imp}.", "{imp}/{imp2}: nei.", "Ingen tegn til {imp} på røntgen.",
        ],
        "historical": [
            "{imp:def} ble fjernet {year}.", "{imp} eksplantert {date} pga. infeksjon.",
            "Tidligere hatt {imp}, fjernet {year}.", "{imp:def} ble tatt ut i {year}.",
            "Hadde tidligere {imp}.", "Fjernet {imp} i {year} etter lommeinfeksjon.",
            "{imp:def} er ikke lenger in situ.",
        ],
        "family": [
            "Mor har {imp}.", "Far fikk {imp} i {year}.", "Bror har {imp} etter hjertestans.",
            "Familieanamnese: mor med {imp}.", "Moren hadde {imp}.", "Søster har {imp} fra {year}.",
            "!Datteren har {imp}.",
        ],
        "uncertain": [
            "Mulig {imp}, avklares med implantatkort.", "Usikkert om pasienten har {imp}.", "{imp}?",
            "Uklart om {imp} fortsatt er in situ.", "Muligens {imp} fra {year}, må verifiseres.",
            "{imp} kan ikke utelukkes.", "Mistanke om {imp} på gammelt røntgenbilde.",
        ],
    },
    "sv": {
        "present": [
            "Patienten har {imp} inopererad {year}.", "{imp} inopererad {date} på {hospital}.",
            "Har {imp} ({model}) sedan {year}.", "{model} {imp} inlagd {year}, fungerar bra.",
            "Känd {imp}, senaste kontroll {date} utan anmärkning.", "{cmp} {date}: normal funktion.",
            "Lungröntgen visar {imp} in situ.", "{imp:def} är MR-villkorad enligt implantatkortet.",
            "Implantatkort medtaget: {model}.", "Har sedan {year} {imp}.",
            "{imp:def} sattes in {year} och fungerar tillfredsställande.", "Fick {imp} {date}.",
            "Inlagd för kontroll av {imp:def}.", "Status efter inläggning av {imp} {year}.",
            "Inga komplikationer efter inläggning av {imp}.",
            "!Ej MR pga {imp}.", "!{imp:def} övervägdes att tas bort men behålls.",
        ],
        "negated": [
            "Ingen {imp}.", "Har inte {imp}.", "Patienten har inte {imp} eller {imp2}.", "{imp}: nej.",
            "Inget {imp}, {imp2} eller annat implantat.", "Förnekar {imp}.", "Har ej {imp}.",
            "Patienten har aldrig haft {imp}.", "{imp}/{imp2}: nej.", "Inga tecken på {imp} på röntgen.",
        ],
        "historical": [
            "{imp:def} togs bort {year}.", "{imp} explanterad {date} pga infektion.",
            "Tidigare haft {imp}, borttagen {year}.", "{imp:def} explanterades {year}.",
            "Hade tidigare {imp}.", "{imp} avlägsnad {year} efter fickinfektion.",
            "{imp:def} finns inte längre kvar.",
        ],
        "family": [
            "Mor har {imp}.", "Far fick {imp} {year}.", "Bror har {imp} efter hjärtstopp.",
            "Hereditet: modern har {imp}.", "Modern hade {imp}.", "Syster har {imp} sedan {year}.",
            "!Dottern har {imp}.",
        ],
        "uncertain": [
            "Möjlig {imp}, kontrolleras med implantatkort.", "Oklart om patienten har {imp}.", "{imp}?",
            "Osäkert om {imp} fortfarande finns kvar.", "Möjligen {imp} från {year}, måste verifieras.",
            "{imp} kan inte uteslutas.", "Misstänkt {imp} på gammal röntgenbild.",
        ],
    },
    "da": {
        "present": [
            "Patienten har {imp} implanteret {year}.", "{imp} implanteret {date} på {hospital}.",
            "Har {imp} ({model}) siden {year}.", "{model} {imp} indopereret {year}, fungerer fint.",
            "Kendt {imp}, seneste kontrol {date} uden anmærkning.", "{cmp} {date}: normal funktion.",
            "Røntgen af thorax viser {imp} in situ.", "{imp:def} er MR-betinget ifølge implantatkortet.",
            "Implantatkort medbragt: {model}.", "Har haft {imp} siden {year}.",
            "{imp:def} blev indsat i {year} og fungerer tilfredsstillende.", "Fik {imp} {date}.",
            "Indlagt til kontrol af {imp:def}.", "Status efter anlæggelse af {imp} {year}.",
            "Ingen komplikationer efter anlæggelse af {imp}.",
            "!Ikke MR-scanning pga. {imp}.", "!{imp:def} blev overvejet fjernet, men bevares.",
        ],
        "negated": [
            "Ingen {imp}.", "Har ikke {imp}.", "Patienten har ikke {imp} eller {imp2}.", "{imp}: nej.",
            "Ingen {imp}, {imp2} eller andet implantat.", "Benægter {imp}.", "Der er ikke anlagt {imp}.",
            "Patienten har aldrig haft {imp}.", "{imp}/{imp2}: nej.", "Ingen tegn på {imp} på røntgen.",
        ],
        "historical": [
            "{imp:def} blev fjernet {year}.", "{imp} eksplanteret {date} pga. infektion.",
            "Tidligere haft {imp}, fjernet {year}.", "{imp:def} blev taget ud i {year}.",
            "Havde tidligere {imp}.", "Fjernet {imp} i {year} efter lommeinfektion.",
            "{imp:def} sidder ikke længere.",
        ],
        "family": [
            "Mor har {imp}.", "Far fik {imp} i {year}.", "Bror har {imp} efter hjertestop.",
            "Disposition: moderen har {imp}.", "Moderen havde {imp}.", "Søster har {imp} siden {year}.",
            "!Datteren har {imp}.",
        ],
        "uncertain": [
            "Mulig {imp}, afklares med implantatkort.", "Uvist om patienten har {imp}.", "{imp}?",
            "Usikkert om {imp} stadig sidder.", "Muligvis {imp} fra {year}, skal verificeres.",
            "{imp} kan ikke udelukkes.", "Mistanke om {imp} på gammelt røntgenbillede.",
        ],
    },
}

ADR_TEMPLATES = {
    "nb": ["Fikk {reac} av {drug}.", "{drug} ga {reac}, seponert.", "Seponert {drug} pga. {reac}.",
           "CAVE: {drug} ({reac}).", "Allergi mot {drug} med {reac}.", "{drug}-indusert {reac}.",
           "Bivirkning: {reac} på {drug}.", "{reac} etter oppstart med {drug} {dose}.",
           "Utviklet {reac} under behandling med {drug}, dosen redusert.", "{reac} grunnet {drug}."],
    "sv": ["Fick {reac} av {drug}.", "{drug} gav {reac}, utsatt.", "Utsatt {drug} pga {reac}.",
           "CAVE: {drug} ({reac}).", "Allergi mot {drug} med {reac}.", "{drug}-inducerad {reac}.",
           "Biverkan: {reac} av {drug}.", "{reac} efter insättning av {drug} {dose}.",
           "Fick {reac} under behandling med {drug}, dosen sänkt.", "Överkänslighet mot {drug} i form av {reac}."],
    "da": ["Fik {reac} af {drug}.", "{drug} gav {reac}, seponeret.", "Seponeret {drug} pga. {reac}.",
           "CAVE: {drug} ({reac}).", "Allergi over for {drug} med {reac}.", "{drug}-induceret {reac}.",
           "Bivirkning: {reac} ved {drug}.", "{reac} efter opstart af {drug} {dose}.",
           "Udviklede {reac} under behandling med {drug}, dosis reduceret.", "{reac} udløst af {drug}."],
}
ADR_NEG_TEMPLATES = {
    "nb": ["Tolererer {drug} godt, ingen {reac}.", "Ingen {reac} etter {drug}.", "{drug} {dose} gitt uten {reac}."],
    "sv": ["Tål {drug} väl, ingen {reac}.", "Ingen {reac} efter {drug}.", "{drug} {dose} givet utan {reac}."],
    "da": ["Tåler {drug} fint, ingen {reac}.", "Ingen {reac} efter {drug}.", "{drug} {dose} givet uden {reac}."],
}
SYMPTOM_TEMPLATES = {  # a reaction word with no drug in the sentence: no ADR pair
    "nb": ["{reac} siste døgn, trolig viral gastroenteritt.", "Innlagt med {reac} av ukjent årsak."],
    "sv": ["{reac} senaste dygnet, troligen virusgastroenterit.", "Inlagd med {reac} av oklar orsak."],
    "da": ["{reac} det seneste døgn, formentlig viral gastroenteritis.", "Indlagt med {reac} af ukendt årsag."],
}
MED_LINE = {"nb": "- {drug} {dose} {freq}", "sv": "- {drug} {dose} {freq}", "da": "- {drug} {dose} {freq}"}
FREQ = {"nb": ["x 1", "x 2", "1+0+1", "om morgenen", "ved behov"],
        "sv": ["x 1", "x 2", "1+0+1", "på morgonen", "vid behov"],
        "da": ["x 1", "x 2", "1+0+1", "morgen", "pn"]}

REACTIONS = {
    "nb": {"rash": ["utslett", "hudutslett"], "urticaria": ["elveblest", "urtikaria"], "angioedema": ["angioødem"],
           "anaphylaxis": ["anafylaktisk reaksjon", "anafylaksi"], "cough": ["tørrhoste", "hoste"],
           "bleeding": ["blødning", "GI-blødning"], "nausea": ["kvalme"], "diarrhoea": ["diaré"],
           "myalgia": ["muskelsmerter", "myalgi"], "hypoglycaemia": ["hypoglykemi"], "bradycardia": ["bradykardi"],
           "dizziness": ["svimmelhet"], "hyperkalaemia": ["hyperkalemi"], "neutropenia": ["nøytropeni"],
           "neuropathy": ["nevropati", "polynevropati"], "constipation": ["obstipasjon", "forstoppelse"]},
    "sv": {"rash": ["utslag", "hudutslag"], "urticaria": ["nässelutslag", "urtikaria"], "angioedema": ["angioödem"],
           "anaphylaxis": ["anafylaktisk reaktion", "anafylaxi"], "cough": ["torrhosta", "rethosta"],
           "bleeding": ["blödning", "GI-blödning"], "nausea": ["illamående"], "diarrhoea": ["diarré"],
           "myalgia": ["muskelsmärtor", "myalgi"], "hypoglycaemia": ["hypoglykemi"], "bradycardia": ["bradykardi"],
           "dizziness": ["yrsel"], "hyperkalaemia": ["hyperkalemi"], "neutropenia": ["neutropeni"],
           "neuropathy": ["neuropati", "polyneuropati"], "constipation": ["förstoppning"]},
    "da": {"rash": ["udslæt", "eksantem"], "urticaria": ["nældefeber", "urticaria"], "angioedema": ["angioødem"],
           "anaphylaxis": ["anafylaktisk shock", "anafylaksi"], "cough": ["tørhoste", "hoste"],
           "bleeding": ["blødning", "GI-blødning"], "nausea": ["kvalme"], "diarrhoea": ["diarré"],
           "myalgia": ["muskelsmerter", "myalgi"], "hypoglycaemia": ["hypoglykæmi"], "bradycardia": ["bradykardi"],
           "dizziness": ["svimmelhed"], "hyperkalaemia": ["hyperkaliæmi"], "neutropenia": ["neutropeni"],
           "neuropathy": ["neuropati", "polyneuropati"], "constipation": ["forstoppelse", "obstipation"]},
}

NOTE_TEXT = {
    "nb": {
        "titles": {"admission": "Innkomstjournal", "discharge": "Epikrise", "mri_referral": "Henvisning MR",
                   "medication_review": "Legemiddelgjennomgang"},
        "meds": "Faste medisiner:", "allergy": "Allergier:", "implants": "Implantater:",
        "hospitals": ["Rikshospitalet", "Haukeland", "St. Olavs hospital", "UNN Tromsø", "Ahus"],
        "fillers": [
            "Pasienten ble innlagt via legevakten med tung pust og brystsmerter.", "Ingen feber.",
            "Ikke røyker, alkohol sosialt.", "God allmenntilstand, våken og orientert.",
            "BT 135/80, puls 72 regelmessig, SpO2 97 % på romluft.", "Hjerte: rene toner, ingen bilyder.",
            "Lunger: vesikulær respirasjon bilateralt.", "Bor hjemme med ektefelle, klarer seg selv.",
            "EKG viser sinusrytme uten iskemiske forandringer.", "Blodprøver uten sikre avvik.",
            "Planlagt poliklinisk oppfølging om tre måneder.", "Utskrives til hjemmet i stabil tilstand.",
            "Henvises til MR caput for utredning av svimmelhetsanfall og hodepine.",
            "Ønsker vurdering av MR-sikkerhet før undersøkelsen.", "Pasienten er informert og samtykker.",
            "Legemiddellisten er gjennomgått med pasienten og fastlegen.", "Ingen interaksjoner av betydning.",
            "Nyrefunksjon stabil, eGFR 58.", "Kontroll hos fastlege om to uker.",
        ],
    },
    "sv": {
        "titles": {"admission": "Inskrivningsanteckning", "discharge": "Epikris", "mri_referral": "Remiss MR",
                   "medication_review": "Läkemedelsgenomgång"},
        "meds": "Aktuella läkemedel:", "allergy": "Överkänslighet:", "implants": "Implantat:",
        "hospitals": ["Karolinska", "Sahlgrenska", "Akademiska sjukhuset", "Skånes universitetssjukhus"],
        "fillers": [
            "Patienten söker akut på grund av andfåddhet och bröstsmärtor.", "Ingen feber.",
            "Icke rökare, alkohol måttligt.", "Gott allmäntillstånd, vaken och orienterad.",
            "BT 135/80, puls 72 regelbunden, saturation 97 % på luft.", "Hjärta: regelbunden rytm, inga blåsljud.",
            "Lungor: vesikulärt andningsljud bilateralt.", "Bor hemma med make, klarar sig själv.",
            "EKG visar sinusrytm utan ischemiska förändringar.", "Blodprover utan säkra avvikelser.",
            "Planerad uppföljning på mottagningen om tre månader.", "Skrivs ut till hemmet i stabilt skick.",
            "Remitteras till MR hjärna för utredning av yrselattacker och huvudvärk.",
            "Önskar bedömning av MR-säkerhet inför undersökningen.", "Patienten är informerad och samtycker.",
            "Läkemedelslistan är genomgången med patienten och distriktsläkaren.", "Inga interaktioner av betydelse.",
            "Njurfunktion stabil, eGFR 58.", "Återbesök hos distriktsläkare om två veckor.",
        ],
    },
    "da": {
        "titles": {"admission": "Indlæggelsesnotat", "discharge": "Epikrise",
                   "mri_referral": "Henvisning til MR-scanning",
                   "medication_review": "Medicingennemgang"},
        "meds": "Fast medicin:", "allergy": "Allergier:", "implants": "Implantater:",
        "hospitals": ["Rigshospitalet", "Aarhus Universitetshospital", "Odense Universitetshospital", "Aalborg"],
        "fillers": [
            "Patienten indlægges via akutmodtagelsen med åndenød og brystsmerter.", "Ingen feber.",
            "Ikke-ryger, alkohol inden for genstandsgrænsen.", "God almentilstand, vågen og orienteret.",
            "BT 135/80, puls 72 regelmæssig, saturation 97 % på atmosfærisk luft.", "Cor: ingen mislyde.",
            "Pulm: vesikulær respiration bilateralt.", "Bor hjemme med ægtefælle, klarer sig selv.",
            "EKG viser sinusrytme uden iskæmiske forandringer.", "Blodprøver uden sikre afvigelser.",
            "Planlagt ambulant opfølgning om tre måneder.", "Udskrives til hjemmet i stabil tilstand.",
            "Henvises til MR af cerebrum til udredning af svimmelhedsanfald og hovedpine.",
            "Ønsker vurdering af MR-sikkerhed forud for undersøgelsen.", "Patienten er informeret og samtykker.",
            "Medicinlisten er gennemgået med patienten og egen læge.", "Ingen interaktioner af betydning.",
            "Nyrefunktion stabil, eGFR 58.", "Kontrol hos egen læge om to uger.",
        ],
    },
}
