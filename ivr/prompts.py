"""What the switchboard says, in Italian and English. Menus (categories) come from config."""

from __future__ import annotations

import re
from datetime import date

PROMPTS: dict[str, dict[str, str]] = {
    "it": {
        "welcome": "Benvenuti al servizio segnalazioni del {municipality}.",
        "open_case": "Risulta aperta una sua segnalazione, numero {protocol}. Per sentirne lo stato, prema 9.",
        "menu": (
            "Per segnalare un problema, prema 1 o dica segnalazione. Per conoscere lo stato di "
            "una pratica, prema 2 o dica stato. Per parlare con un operatore, prema 3. "
            "For English, press 4."
        ),
        "not_understood": "Non ho capito.",
        "no_input": "Non ho sentito nessuna scelta.",
        "category_item": "Per {name}, prema {digit}.",
        "category_more": "Per altre categorie, prema 9.",
        "category_other": "Per un altro tipo di problema, prema 0.",
        "describe": (
            "Dopo il segnale, descriva il problema e dica dove si trova, con via e numero "
            "civico. Quando ha finito, resti in silenzio."
        ),
        "describe_again": "Non ho sentito la descrizione. Riproviamo.",
        "readback": "Ho registrato: {text}. Per confermare, prema 1 o dica sì. Per ripetere, prema 2.",
        "registered": (
            "Grazie. La segnalazione è registrata con il numero di protocollo: {digits}. "
            "Ripeto: {digits}."
        ),
        "sms_follows": "Le invieremo un SMS di conferma con il numero.",
        "ask_protocol": (
            "Digiti il numero della pratica e termini con cancelletto. L'anno si può omettere "
            "se è quello in corso."
        ),
        "unknown_case": "Non trovo la pratica numero {digits}.",
        "status_own": "La pratica {digits} è {status}. Se ne occupa: {office}. Termine previsto: {due}.",
        "status_other": "La pratica {digits} è {status}. Se ne occupa: {office}.",
        "operator_wait": "La mettiamo in contatto con un operatore. Resti in linea, per favore.",
        "hold": "Tutti gli operatori sono occupati. La preghiamo di attendere.",
        "closed_hours": "In questo momento gli uffici sono chiusi.",
        "nobody": "Nessun operatore è disponibile ora.",
        "voicemail": "Lasci un messaggio: dopo il segnale, dica il suo problema e dove si trova.",
        "voicemail_saved": "Il suo messaggio è stato registrato con il numero di protocollo: {digits}.",
        "offer_operator": "La passo a un operatore.",
        "goodbye": "Grazie per aver chiamato. Arrivederci.",
        "received_later": (
            "Grazie. La segnalazione è stata ricevuta e sarà registrata a breve: il numero di "
            "protocollo le sarà comunicato appena possibile."
        ),
        "sms_follows_later": "Le invieremo il numero con un SMS.",
        "call_back_later": "Richiamando questo numero tra qualche minuto potrà ascoltarlo.",
        "call_again": (
            "Il servizio segnalazioni è momentaneamente non disponibile. La preghiamo di "
            "richiamare tra qualche minuto, o di inviare un SMS. Ci scusiamo."
        ),
        "status_unavailable": (
            "In questo momento non posso consultare le pratiche. La preghiamo di riprovare tra "
            "qualche minuto."
        ),
        "slash": "barra",
    },
    "en": {
        "welcome": "Welcome to the {municipality} report line.",
        "open_case": "You have an open report, number {protocol}. To hear its status, press 9.",
        "menu": (
            "To report a problem, press 1 or say report. To hear the status of a case, press 2 "
            "or say status. To speak to an operator, press 3."
        ),
        "not_understood": "Sorry, I did not understand.",
        "no_input": "I did not hear a choice.",
        "category_item": "For {name}, press {digit}.",
        "category_more": "For more categories, press 9.",
        "category_other": "For another kind of problem, press 0.",
        "describe": (
            "After the tone, describe the problem and say where it is, with street and number. "
            "When you have finished, stay silent."
        ),
        "describe_again": "I did not hear a description. Let us try again.",
        "readback": "I recorded: {text}. To confirm, press 1 or say yes. To repeat, press 2.",
        "registered": "Thank you. Your report is registered with protocol number: {digits}. Again: {digits}.",
        "sms_follows": "We will send you a text message with the number.",
        "ask_protocol": "Enter the case number and finish with the hash key. You may leave out the year if it is this year.",
        "unknown_case": "I cannot find case number {digits}.",
        "status_own": "Case {digits} is {status}. It is handled by: {office}. Expected by: {due}.",
        "status_other": "Case {digits} is {status}. It is handled by: {office}.",
        "operator_wait": "We are connecting you to an operator. Please hold.",
        "hold": "All operators are busy. Please hold.",
        "closed_hours": "The offices are closed at the moment.",
        "nobody": "No operator is available right now.",
        "voicemail": "Please leave a message: after the tone, describe your problem and where it is.",
        "voicemail_saved": "Your message is registered with protocol number: {digits}.",
        "offer_operator": "I will put you through to an operator.",
        "goodbye": "Thank you for calling. Goodbye.",
        "received_later": (
            "Thank you. Your report is received and will be registered shortly: you will be "
            "given its protocol number as soon as possible."
        ),
        "sms_follows_later": "We will send you the number by text message.",
        "call_back_later": "If you call this number again in a few minutes, you can hear it.",
        "call_again": (
            "The report line is unavailable at the moment. Please call again in a few "
            "minutes, or send a text message. We apologise."
        ),
        "status_unavailable": (
            "I cannot look up cases at the moment. Please try again in a few minutes."
        ),
        "slash": "slash",
    },
}

MONTHS = {
    "it": [
        "gennaio",
        "febbraio",
        "marzo",
        "aprile",
        "maggio",
        "giugno",
        "luglio",
        "agosto",
        "settembre",
        "ottobre",
        "novembre",
        "dicembre",
    ],
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
}

# Spoken words that choose a menu option (folded: lower case, no accents).
SPEECH = {
    "report": ("segnal", "problema", "guasto", "report", "problem"),
    "status": ("stato", "pratica", "status", "case"),
    "operator": ("operator", "persona", "parlare", "agent", "someone"),
    "english": ("english", "inglese"),
    "yes": ("si", "conferm", "giusto", "esatto", "yes", "correct", "confirm"),
    "no": ("no", "ripet", "sbagliat", "repeat", "again"),
    "open_status": ("mia", "nove", "my", "nine"),
}


# What XML 1.0 cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF): a caller's
# words or keys are read back inside TwiML, which must stay a well-formed document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def prompt(lang: str, key: str, **values: str) -> str:
    clean = {k: _NOT_XML.sub(" ", str(v)) for k, v in values.items()}
    return PROMPTS.get(lang, PROMPTS["it"])[key].format(**clean)


def spoken_date(day: date, lang: str) -> str:
    month = MONTHS.get(lang, MONTHS["it"])[day.month - 1]
    return f"{day.day} {month} {day.year}" if lang != "en" else f"{month} {day.day}, {day.year}"


def digits_of(year: int, number: int, lang: str) -> str:
    """2026/0000123 read digit by digit: '2, 0, 2, 6, barra, 1, 2, 3'."""
    parts = [*str(year), prompt(lang, "slash"), *str(number)]
    return ", ".join(parts)
