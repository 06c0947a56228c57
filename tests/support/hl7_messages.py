"""HL7 v2 messages as a Chinese LIS and HIS send them (ER7 text, segments end in CR)."""

from __future__ import annotations

NATIONAL_ID = "330402196003050017"


def msh(kind: str, control: str, version: str = "2.5.1", charset: str = "UNICODE UTF-8",
        facility: str = "township-1", when: str = "20261101083000") -> str:
    return (f"MSH|^~\\&|LIS|{facility}|HUB|HIE|{when}||{kind}|{control}|P|{version}|||||CHN|"
            f"{charset}")


def pid(mrn: str = "P001", name: str = "张^伟", national_id: str | None = NATIONAL_ID) -> str:
    ids = f"{mrn}^^^township-1^MR" if mrn else ""
    if national_id:
        ids += f"~{national_id}^^^CHN^NNCHN"
    return f"PID|1||{ids}||{name}||19600305|M|||中山路12号^^嘉兴^浙江^314000||13905730001"


def adt(control: str = "ADT1", **kw) -> str:
    return "\r".join([msh("ADT^A04", control, **kw), "EVN|A04|20261101083000", pid()]) + "\r"


def obr(order: str = "LAB1", set_id: str = "1") -> str:
    return (f"OBR|{set_id}|ORD-{order}|{order}|24323-8^Comprehensive metabolic panel^LN|||"
            "20261101080000|||||||20261101080500|BLD^静脉血|||||||20261101083000|||F")


def oru(control: str = "ORU1", glucose: str = "7.2", status: str = "F", order: str = "LAB1",
        version: str = "2.5.1", charset: str = "UNICODE UTF-8", when: str = "20261101083000",
        patient: str | None = None, results: list[str] | None = None,
        facility: str = "township-1") -> str:
    """An ORU^R01: the given segments after OBR (OBX, NTE, SPM), else four results, one of
    each common value type."""
    return "\r".join([
        msh("ORU^R01", control, version, charset, when=when, facility=facility),
        patient or pid(), obr(order),
        *(results if results is not None else [
            f"OBX|1|NM|15074-8^Glucose^LN||{glucose}|mmol/L|3.9-6.1|H|||{status}|||"
            "20261101080000",
            "OBX|2|SN|2160-0^Creatinine^LN||<^44|umol/L|57-111|L|||F",
            "OBX|3|ST|8251-1^备注^LN||溶血||||||F",
            "OBX|4|CWE|882-1^ABO+Rh group^LN||A+^A型Rh阳性^L||||||F"]),
    ]) + "\r"
