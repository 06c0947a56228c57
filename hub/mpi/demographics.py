"""What the master patient index compares: a normalised, pseudonymised view of one Patient.

Identifiers are kept only as HMAC-SHA256 digests under a consortium secret, so the index can
test them for equality without ever holding a national ID or health-card number in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from hub.demo.population import gb11643_check

NATIONAL_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"  # GB 11643 citizen identity number
HEALTH_CARD_SYSTEM = "urn:oid:2.16.156.10011.1.19"  # 居民健康卡 resident health card

# pypinyin reads these characters by their common-word sound (曾 -> ceng); as the first
# character of a name they are surnames with another reading, and a homophone typo of the
# surname (曾 -> 增) must keep the same pinyin.
_SURNAME_READINGS = {"曾": "zeng", "单": "shan", "仇": "qiu", "解": "xie", "乐": "yue",
                     "区": "ou", "朴": "piao", "查": "zha", "盖": "ge", "缪": "miao",
                     "尉": "yu", "覃": "qin", "翟": "zhai", "种": "chong", "秘": "bi",
                     "隗": "wei", "长": "chang", "重": "chong"}
_PROVINCES = ("北京|天津|河北|山西|内蒙古|辽宁|吉林|黑龙江|上海|江苏|浙江|安徽|福建|江西|山东|"
              "河南|湖北|湖南|广东|广西|海南|重庆|四川|贵州|云南|西藏|陕西|甘肃|青海|宁夏|新疆|"
              "台湾|香港|澳门")
_PROVINCE_PREFIX = re.compile(
    rf"^(?:中国)?(?:(?:{_PROVINCES})(?:省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)?)?")
# Clerks write 嘉兴市南湖区 or 嘉兴南湖: dropping the administrative suffixes everywhere makes
# both spellings one string; applied to both sides of a comparison it cannot create a mismatch.
_ADMIN_SUFFIX = re.compile("街道|自治州|自治县|省|市|区|县|镇|乡")
_NAME_USE_RANK = {"official": 0, "usual": 1, None: 2, "nickname": 3, "temp": 4, "anonymous": 5,
                  "old": 9, "maiden": 9}
_DIGITS = re.compile(r"\d")


def keyed_hash(value: str, secret: bytes) -> str:
    """HMAC-SHA256 (hex) of an identifier, after stripping and upper-casing it."""
    return hmac.new(secret, value.strip().upper().encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Demographics:
    record_key: str
    national_id: str | None  # keyed hash of the 18-character ID
    health_card: str | None  # keyed hash
    name: str | None
    pinyin: str | None
    birth_date: date | None
    sex: str | None  # "male", "female" or None
    phone: str | None
    address: str | None


def extract(patient: dict, record_key: str, secret: bytes) -> Demographics:
    """The matchable demographics of a FHIR Patient; odd or missing fields become None."""
    national_id = health_card = None
    for ident in _dicts(patient.get("identifier")):
        value, system = ident.get("value"), ident.get("system")
        if not isinstance(value, str) or ident.get("use") == "old":
            continue
        if system == NATIONAL_ID_SYSTEM and national_id is None:
            canonical = canonical_national_id(value)
            national_id = keyed_hash(canonical, secret) if canonical else None
        elif system == HEALTH_CARD_SYSTEM and health_card is None and value.strip():
            health_card = keyed_hash(value, secret)
    name = _name(patient.get("name"))
    gender = patient.get("gender")
    return Demographics(
        record_key=record_key, national_id=national_id, health_card=health_card,
        name=name, pinyin=to_pinyin(name) if name else None,
        birth_date=_birth_date(patient.get("birthDate")),
        sex=gender if gender in ("male", "female") else None,
        phone=_phone(patient.get("telecom")), address=_address(patient.get("address")))


def canonical_national_id(value: str) -> str | None:
    """The 18-character form of a citizen ID, or None when it cannot be one.

    A failed check digit means a keying error: trusting it would link or split residents
    deterministically on a wrong number, so such an ID is treated as absent.
    """
    v = value.strip().upper()
    if len(v) == 15 and v.isdigit():  # first-generation IDs: 2-digit year, no check digit
        body = f"{v[:6]}19{v[6:]}"
        return body + gb11643_check(body)
    if len(v) == 18 and v[:17].isdigit() and gb11643_check(v[:17]) == v[17]:
        return v
    return None


@lru_cache(maxsize=65536)
def to_pinyin(name: str) -> str:
    """Toneless lowercase pinyin without separators; Latin names just lose case and spaces."""
    # Imported here: its dictionaries take half a second to load, which every process
    # importing this module for keyed_hash alone (a rebuild's fold workers) would pay.
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(name, style=Style.NORMAL, errors="default")
    if syllables and name[0] in _SURNAME_READINGS:
        syllables[0] = _SURNAME_READINGS[name[0]]
    return "".join(c for c in "".join(syllables).lower() if "a" <= c <= "z")


def normalise_name(text: str) -> str | None:
    letters = "".join(c for c in unicodedata.normalize("NFKC", text) if c.isalpha())
    return letters.lower() or None  # lower() leaves Han characters alone


def normalise_address(text: str) -> str | None:
    s = "".join(c for c in unicodedata.normalize("NFKC", text) if c.isalnum())
    s = _ADMIN_SUFFIX.sub("", _PROVINCE_PREFIX.sub("", s))
    return s.lower() or None


def to_row(d: Demographics) -> dict[str, Any]:
    """Plain JSON/SQL values: the birth date as an ISO string."""
    return {"record_key": d.record_key, "national_id": d.national_id,
            "health_card": d.health_card, "name": d.name, "pinyin": d.pinyin,
            "birth_date": d.birth_date.isoformat() if d.birth_date else None, "sex": d.sex,
            "phone": d.phone, "address": d.address}


def from_row(row: Mapping[str, Any]) -> Demographics:
    bd = row.get("birth_date")
    if isinstance(bd, str):
        bd = date.fromisoformat(bd)
    return Demographics(
        record_key=row["record_key"], national_id=row.get("national_id"),
        health_card=row.get("health_card"), name=row.get("name"), pinyin=row.get("pinyin"),
        birth_date=bd, sex=row.get("sex"), phone=row.get("phone"), address=row.get("address"))


def _dicts(value: Any) -> list[dict]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _use(element: dict) -> str | None:
    use = element.get("use")
    return use if isinstance(use, str) else None


def _name(names: Any) -> str | None:
    ranked = sorted(_dicts(names), key=lambda n: _NAME_USE_RANK.get(_use(n), 6))
    for n in ranked:
        text = n.get("text")
        if not isinstance(text, str) or not text.strip():
            given = n.get("given")
            parts = [n.get("family"), *(given if isinstance(given, list) else [])]
            text = "".join(p for p in parts if isinstance(p, str))  # Chinese order: family first
        name = normalise_name(text)
        if name:
            return name
    return None


def _birth_date(value: Any) -> date | None:
    # A partial date (1980, 1980-05) cannot support a birth-date comparison.
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _phone(telecom: Any) -> str | None:
    best: tuple[int, str] | None = None
    for cp in _dicts(telecom):
        if cp.get("system") not in ("phone", "sms") or cp.get("use") == "old":
            continue
        value = cp.get("value")
        digits = "".join(_DIGITS.findall(value))[-11:] if isinstance(value, str) else ""
        # Placeholders such as 00000000000 would block and match whole wards together.
        if len(digits) < 7 or len(set(digits)) == 1:
            continue
        rank = 0 if cp.get("use") == "mobile" or (len(digits) == 11 and digits[0] == "1") else 1
        if best is None or rank < best[0]:
            best = (rank, digits)
    return best[1] if best else None


def _address(addresses: Any) -> str | None:
    ranked = sorted(_dicts(addresses), key=lambda a: {"home": 0, "old": 9}.get(_use(a), 1))
    for a in ranked:
        if _use(a) == "old":
            break
        text = a.get("text")
        if not isinstance(text, str) or not text.strip():
            line = a.get("line")
            parts = [a.get("state"), a.get("city"), a.get("district"),
                     *(line if isinstance(line, list) else [])]
            text = "".join(p for p in parts if isinstance(p, str))
        address = normalise_address(text)
        if address:
            return address
    return None
